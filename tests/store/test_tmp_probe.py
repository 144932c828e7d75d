import time
def test_pg(make_postgres_db, postgres_url, redis_url):
    from fathom.store.db import Database
    t=time.perf_counter(); url = make_postgres_db(); t1=time.perf_counter()
    db = Database(url); db.migrate(); t2=time.perf_counter()
    print("create", t1-t, "migrate", t2-t1, url, postgres_url, redis_url)
    db.dispose()

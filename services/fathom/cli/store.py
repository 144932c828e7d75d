"""``fathom store migrate|revision``: the job store's schema, on its own (a Kubernetes Job or a compose
one-shot before any service starts; every process also migrates at start, safely, so this is an
ordering step, not a requirement)."""

from __future__ import annotations

import json
import sys

import typer

from fathom.cli.output import command_group, out_console
from fathom.core.config import get_settings
from fathom.core.logging import configure_logging

app = command_group("The job store: schema migrations.")


def _database():  # type: ignore[no-untyped-def]
    from fathom.store.db import Database

    return Database(get_settings().resolved_database_url)


@app.command("migrate")
def migrate(
    revision: str = typer.Option("head", "--revision", help="Alembic revision to upgrade to."),
) -> None:
    """Upgrade the store's schema (FATHOM_DATABASE_URL; default the local SQLite file)."""
    configure_logging()
    db = _database()
    try:
        before = db.current_revision()
        db.migrate(revision)
        after = db.current_revision()
    finally:
        db.dispose()
    out_console.print(f"store at revision {after} (was {before or 'empty'})")


@app.command("revision")
def revision(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """The store's current and head revisions; exit code 1 when the schema is behind."""
    db = _database()
    try:
        current, head = db.current_revision(), db.head_revision()
    finally:
        db.dispose()
    if as_json:
        sys.stdout.write(json.dumps({"current": current, "head": head}) + "\n")
    else:
        out_console.print(f"current {current or 'empty'}, head {head}")
    raise typer.Exit(0 if current == head else 1)

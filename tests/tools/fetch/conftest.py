"""Fixtures for the fetch tests: the hostile local web of ``fetch_site``, started once per session.

``site`` serves the main origin on 127.0.0.1 (tests allowlist it); ``secret_site`` serves an
"internal" origin on 127.0.0.2 that redirects and scripts try to reach.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fetch_site import SECRET, Site, _serve, build_routes


@pytest.fixture(scope="session")
def secret_site() -> Iterator[Site]:
    server, site = _serve(
        "127.0.0.2",
        lambda port: {
            # CORS open, so only our guard (not the browser's same-origin policy) keeps scripts out.
            "/secret": lambda q: (
                200,
                {"Content-Type": "text/plain", "Access-Control-Allow-Origin": "*"},
                SECRET.encode(),
            ),
        },
    )
    yield site
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def site(secret_site: Site) -> Iterator[Site]:
    server, s = _serve("127.0.0.1", lambda port: build_routes(secret_site.base))
    yield s
    server.shutdown()
    server.server_close()

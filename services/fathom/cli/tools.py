"""``fathom search`` and ``fathom fetch``: the agent's two tools, by hand.

Local mode (search backend ``local``, the default) serves the shipped sample corpus as a local web
on a free port inside the command, so that search hits have URLs that resolve while it runs. To
keep a local web running, start ``fathom corpus serve`` (it prints its base URL, by default
http://127.0.0.1:8088) and pass that URL as ``--web`` to ``fathom search`` and as ``--allow-origin``
to ``fathom fetch``: a 127.0.0.1 URL is fetched only from an allowlisted local web, never otherwise
(the SSRF guard refuses loopback and private addresses). ``fathom fetch /wiki/<id>`` reads a
document of the sample corpus from the in-command local web.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import typer
from rich.markup import escape

from fathom.cli.output import CliConsole
from fathom.core.config import Settings, get_settings
from fathom.core.errors import FathomError
from fathom.tools.base import ToolResult

console = CliConsole(soft_wrap=True)
err_console = CliConsole(stderr=True, soft_wrap=True)


def _settings_with(search_backend: str | None) -> Settings:
    settings = get_settings()
    if search_backend is None:
        return settings
    if search_backend not in ("local", "serper", "searxng"):
        raise typer.BadParameter("must be one of: local, serper, searxng", param_hint="--backend")
    search = settings.search.model_copy(update={"backend": search_backend})
    return settings.model_copy(update={"search": search})


@contextlib.contextmanager
def _sample_web(settings: Settings) -> Iterator[tuple[str, bool]]:
    """The sample corpus at the configured local web origin (``settings.web``): a running
    ``fathom serve web`` is reused (yields ``(origin, True)``: its URLs outlive the command),
    else one is served inside the command (``(origin, False)``)."""
    from fathom.corpus.sample import ensure_sample_index
    from fathom.corpus.web import ensure_local_web

    corpus_dir = settings.search.index_dir or ensure_sample_index(settings)
    origin, stop = ensure_local_web(settings, corpus_dir)
    try:
        yield origin, stop is None
    finally:
        if stop is not None:
            stop()


def _emit(result: ToolResult, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"ok": result.ok, "text": result.text, "meta": result.meta}, indent=2))
    elif result.ok:
        console.print(escape(result.text), highlight=False)
    else:
        err_console.print(f"[red]{escape(result.text)}[/red]")
    if not result.ok:
        raise typer.Exit(1)


def _fail(message: str) -> None:
    err_console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def search(
    query: str = typer.Argument(..., help="The search query."),
    backend: str | None = typer.Option(
        None, "--backend", help="local, serper or searxng (default: FATHOM_SEARCH__BACKEND, else local)."
    ),
    top_k: int = typer.Option(10, "--top-k", "-k", help="How many results (1-20)."),
    web: str | None = typer.Option(
        None, "--web", help="Local mode: link hits to this running local web (`fathom corpus serve`)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print {ok, text, meta} as JSON."),
) -> None:
    """Run the `search_urls` tool and print its result as the agent would see it.

    In local mode the sample corpus is served inside this command: its URLs resolve while it runs.
    To link hits to a lasting local web, pass --web with the URL `fathom corpus serve` prints.
    """
    settings = _settings_with(backend)

    async def run(base_url: str | None) -> ToolResult:
        from fathom.tools.search.factory import build_search_backend
        from fathom.tools.toolbox import run_search

        engine = build_search_backend(settings, base_url=base_url)
        try:
            return await run_search(engine, query, top_k, timeout_s=settings.search.timeout_s)
        finally:
            await engine.aclose()

    try:
        if settings.search.backend == "local" and web is None:
            with _sample_web(settings) as (base_url, lasting):
                result = asyncio.run(run(base_url))
            if not as_json and not lasting:
                err_console.print(
                    f"[dim]local web {base_url} ran for this command only; keep one running there with "
                    "`fathom serve web`, or read a hit with `fathom fetch /wiki/<id>`[/dim]"
                )
        else:
            result = asyncio.run(run(web.rstrip("/") if web else None))
    except FathomError as exc:
        _fail(str(exc))
    _emit(result, as_json)


def fetch(
    url: str = typer.Argument(..., help="http(s) URL, or /wiki/<id> for a sample-corpus document."),
    goal: str | None = typer.Option(None, "--goal", "-g", help="What to look for on the page."),
    render: bool = typer.Option(False, "--render", help="Render the page in headless Chromium."),
    raw: bool = typer.Option(False, "--raw", help="Print the page's main text only (no extractor model)."),
    allow_origin: list[str] = typer.Option(
        [], "--allow-origin", help="Allow this origin (scheme://host:port), e.g. a `fathom corpus serve` URL."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print {ok, text, meta} as JSON."),
) -> None:
    """Run the `query_url` tool (or, with --raw, only the fetch and main-text reading).

    Loopback and private addresses are refused unless allowlisted.
    For a local web started by `fathom corpus serve`, pass --allow-origin with the URL it prints.
    A path /wiki/<id> is read from the shipped sample corpus, served inside this command.
    """
    if not raw and not (goal and goal.strip()):
        raise typer.BadParameter("required (or use --raw for the page text only)", param_hint="--goal")
    settings = get_settings()
    render_flag = True if render else None

    async def run(target: str, local_web: str | None) -> ToolResult:
        if raw:
            origins = [*allow_origin, *([local_web] if local_web else [])]
            return await _read_raw(settings, target, render_flag, origins)
        from fathom.models.factory import close_backends
        from fathom.tools.toolbox import build_toolbox

        toolbox = build_toolbox(settings, local_web_base=local_web, allow_origins=list(allow_origin))
        try:
            assert goal is not None
            return await toolbox.query_url(target, goal.strip(), render=render_flag)
        finally:
            await toolbox.aclose()
            await close_backends()

    try:
        if url.startswith("/wiki/"):
            with _sample_web(settings) as (base_url, _lasting):
                result = asyncio.run(run(base_url + url, base_url))
        else:
            result = asyncio.run(run(url, None))
    except FathomError as exc:
        _fail(str(exc))
    try:
        _emit(result, as_json)
    finally:
        if not result.ok and result.meta.get("error") == "SSRFError" and not as_json and _is_loopback(url):
            err_console.print(
                "[dim]a local web started by `fathom corpus serve` is reachable only with "
                "--allow-origin <its base URL>[/dim]"
            )


def _is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return host == "localhost" or host.startswith("127.") or host == "::1"


async def _read_raw(settings: Settings, url: str, render: bool | None, origins: list[str]) -> ToolResult:
    from fathom.tools.fetch.chain import build_fetch_chain
    from fathom.tools.toolbox import fetch_limit_s, page_meta, read_for_tool

    chain = build_fetch_chain(settings.fetch, allow_origins=origins, snapshot_dir=settings.snapshot_dir)
    try:
        result = await read_for_tool(chain, url, render=render, limit_s=fetch_limit_s(settings))
    finally:
        await chain.aclose()
    if isinstance(result, ToolResult):
        return result
    meta: dict[str, Any] = {
        **page_meta(url, result),
        "chars": len(result.text.text),
        "truncated": result.text.truncated,
    }
    return ToolResult(text=result.text.text, meta=meta)


def register(app: typer.Typer) -> None:
    app.command("search")(search)
    app.command("fetch")(fetch)

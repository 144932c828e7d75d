"""The fetch chain behind ``query_url``: replay, or httpx first and the browser when needed.

The browser is used when the caller asks (``render=True``), when settings say ``always``, for hosts
in ``browser_domains``, and, in ``auto``, when plain HTML carries scripts and yields almost no
main text, or little text beside signs of a script-built shell (see ``looks_script_built``).
Every fetched body is snapshotted before it is read, so a failed read can still be replayed and
examined.

Text extraction is CPU work and runs off the event loop: in a thread by default, or in a process
pool of ``extract_workers`` processes (real parallelism on a multi-core box). The process pool is
opt-in because it uses the forkserver start method, which re-imports the caller's ``__main__``
(scripts must have an ``if __name__ == "__main__"`` guard). With the pool, the snapshot is written
in the same hop as the read, in the worker, so the event loop's process only fetches.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import multiprocessing
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from fathom.core.config import FetchSettings
from fathom.core.errors import ConfigError, FetchError
from fathom.core.logging import get_logger
from fathom.tools.fetch.base import FetchedPage, Fetcher, PageSnapshot, PageText
from fathom.tools.fetch.browser import BrowserPool
from fathom.tools.fetch.content import EXTRACTOR_VERSION, read_page
from fathom.tools.fetch.httpx_fetcher import HttpxFetcher
from fathom.tools.fetch.snapshots import ReplayFetcher, SnapshotStore
from fathom.tools.fetch.ssrf import SSRFGuard

log = get_logger(__name__)

_SCRIPT_TAG = re.compile(rb"<script\b", re.I)
_SCRIPT_BODY = re.compile(rb"<script\b[^>]*>(.*?)</script\s*>", re.I | re.S)
_NOSCRIPT_JS = re.compile(rb"<noscript\b[^>]*>[^<]{0,400}?javascript", re.I)
# An application mount point or main element left empty for scripts to fill.
_EMPTY_MOUNT = re.compile(
    rb"<(?:div|main)\b[^>]*\b(?:id=[\"']?(?:root|app|__next|__nuxt|content|main)\b|role=[\"']?main)[^>]*>\s*</(?:div|main)>",
    re.I,
)
# Below this many characters of main text a scripted page is checked for signs of a shell.
_SHELL_SUSPECT_FACTOR = 4


@dataclass(frozen=True)
class ReadResult:
    text: PageText
    snapshot: PageSnapshot | None
    page: FetchedPage


def looks_script_built(body: bytes, text_chars: int = 0, min_text_chars: int = 200) -> bool:
    """HTML whose main text is made by scripts, judged from the raw body and its extracted text.

    Scripts are required. Then: almost no main text, or a little text (boilerplate such as a
    licence footer is often all a shell has) together with a sign of a shell: a noscript notice
    about JavaScript, an empty app mount, or more inline script than text.
    """
    if _SCRIPT_TAG.search(body) is None:
        return False
    if text_chars < min_text_chars:
        return True
    if text_chars >= _SHELL_SUSPECT_FACTOR * min_text_chars:
        return False
    if _NOSCRIPT_JS.search(body) or _EMPTY_MOUNT.search(body):
        return True
    inline = sum(len(m) for m in _SCRIPT_BODY.findall(body))
    return inline > 2 * text_chars


def host_matches(host: str, domains: Iterable[str]) -> bool:
    host = host.rstrip(".").lower()
    for domain in domains:
        d = domain.strip().rstrip(".").lower()
        if d and (host == d or host.endswith("." + d)):
            return True
    return False


class FetchChain:
    def __init__(
        self,
        settings: FetchSettings,
        guard: SSRFGuard,
        snapshots: SnapshotStore | None,
        httpx_fetcher: Fetcher | None = None,
        browser: Fetcher | None = None,
        *,
        extract_workers: int | None = None,
    ) -> None:
        self.settings = settings
        self.guard = guard
        self.snapshots = snapshots
        self._replay = ReplayFetcher(snapshots) if snapshots is not None else None
        if settings.mode == "replay":
            if self._replay is None:
                raise ConfigError("fetch mode 'replay' needs a snapshot store")
            self._httpx: Fetcher | None = None
            self._browser: Fetcher | None = None
        else:
            self._httpx = httpx_fetcher or HttpxFetcher(settings, guard)
            if browser is not None:
                self._browser = browser
            else:
                self._browser = None if settings.browser == "never" else BrowserPool(settings, guard)
        self._executor: concurrent.futures.Executor | None = None
        self._extract_workers = extract_workers or 0

    @property
    def httpx(self) -> Fetcher | None:
        return self._httpx

    @property
    def browser(self) -> Fetcher | None:
        return self._browser

    async def read(
        self, url: str, *, render: bool | None = None, deadline_s: float | None = None
    ) -> ReadResult:
        """Fetch ``url`` and read its main text. Raises ``FetchError`` (or a subclass) on failure."""
        if deadline_s is None:
            return await self._read(url, render)
        try:
            async with asyncio.timeout(deadline_s):
                return await self._read(url, render)
        except TimeoutError:
            raise FetchError(url, f"deadline of {deadline_s:g}s exceeded") from None

    async def aclose(self) -> None:
        for fetcher in (self._httpx, self._browser):
            if fetcher is not None:
                with contextlib.suppress(Exception):
                    await fetcher.aclose()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _read(self, url: str, render: bool | None) -> ReadResult:
        if self._replay is not None and self.settings.mode == "replay":
            page, snap = await asyncio.to_thread(self._replay.fetch_stored, url)
            return ReadResult(await self.extract(page), snap, page)
        assert self._httpx is not None
        if self._browser_first(url, render):
            return await self._fetch_and_read(
                self._browser_or_fail(url), url, self.settings.browser_deadline_s
            )
        result = await self._fetch_and_read(self._httpx, url, self.settings.deadline_s)
        if (
            render is None
            and self.settings.browser == "auto"
            and self._browser is not None
            and result.text.kind == "html"
            and looks_script_built(result.page.body, len(result.text.text), self.settings.js_min_text_chars)
        ):
            try:
                rendered = await self._fetch_and_read(self._browser, url, self.settings.browser_deadline_s)
            except FetchError as exc:
                log.info("fetch.render_fallback_failed", url=url, error=exc.message)
                return result
            # The rendered DOM holds what the raw HTML had plus what scripts built, so it wins when
            # it has any text: "longer wins" kept a shell's licence footer over a short article.
            if rendered.text.text.strip():
                return rendered
        return result

    def _browser_first(self, url: str, render: bool | None) -> bool:
        if render is not None:
            return render
        if self.settings.browser == "always":
            return True
        if self.settings.browser_domains:
            return host_matches(urlsplit(url).hostname or "", self.settings.browser_domains)
        return False

    def _browser_or_fail(self, url: str) -> Fetcher:
        if self._browser is None:
            raise FetchError(url, "rendering was asked for but the browser is disabled (browser=never)")
        return self._browser

    async def _fetch_and_read(self, fetcher: Fetcher, url: str, deadline_s: float) -> ReadResult:
        from fathom.core.metrics import count_fetch

        name = type(fetcher).__name__.removesuffix("Fetcher").lower() or "fetcher"
        try:
            page = await fetcher.fetch(url, deadline_s=deadline_s)
        except asyncio.CancelledError:
            count_fetch(name, "cancelled")
            raise
        except Exception as exc:
            count_fetch(name, type(exc).__name__)
            raise
        count_fetch(name, "ok")
        # Snapshot and read in one hop off the event loop: each hop to a thread or process costs
        # about as much interpreter time as writing the snapshot itself.
        if self._extract_workers <= 0:
            text, snap = await asyncio.to_thread(snapshot_and_read, page, self.settings, self.snapshots)
        else:
            root = self.snapshots.root if self.snapshots is not None else None
            text, snap = await asyncio.get_running_loop().run_in_executor(
                self._process_pool(), snapshot_and_read_at, page, self.settings, root
            )
        return ReadResult(text, snap, page)

    async def extract(self, page: FetchedPage) -> PageText:
        """``read_page`` off the event loop."""
        if self._extract_workers <= 0:
            return await asyncio.to_thread(read_page, page, self.settings)
        return await asyncio.get_running_loop().run_in_executor(
            self._process_pool(), read_page, page, self.settings
        )

    def _process_pool(self) -> concurrent.futures.Executor:
        if self._executor is None:
            # forkserver: never fork a process that holds Chromium pipes or event-loop state.
            ctx = multiprocessing.get_context("forkserver")
            self._executor = concurrent.futures.ProcessPoolExecutor(self._extract_workers, mp_context=ctx)
        return self._executor


def snapshot_and_read(
    page: FetchedPage, settings: FetchSettings, store: SnapshotStore | None
) -> tuple[PageText, PageSnapshot | None]:
    """Store the body first (so a page that fails to read can still be replayed), then read it."""
    snap = store.put(page, EXTRACTOR_VERSION) if store is not None else None
    return read_page(page, settings), snap


# One store per snapshot root in each extraction process (SQLite in WAL mode takes writers from
# several processes; each process keeps its own connection).
_WORKER_STORES: dict[tuple[Path, str | None], SnapshotStore] = {}


def snapshot_and_read_at(
    page: FetchedPage, settings: FetchSettings, root: Path | None
) -> tuple[PageText, PageSnapshot | None]:
    """``snapshot_and_read`` for an extraction process, which opens the store by its root."""
    store = None
    if root is not None:
        key = (root, settings.snapshot_index_url)
        store = _WORKER_STORES.get(key)
        if store is None:
            store = _WORKER_STORES[key] = SnapshotStore(root, index_url=settings.snapshot_index_url)
    return snapshot_and_read(page, settings, store)


def build_fetch_chain(
    settings: FetchSettings,
    allow_origins: Iterable[str] = (),
    *,
    snapshot_dir: Path | None = None,
    extract_workers: int | None = None,
) -> FetchChain:
    """The one place that builds the fetch stack from settings.

    ``allow_origins`` adds origins (``scheme://host:port``) to ``settings.allow_origins``; local mode
    passes its own local web and nothing else. Snapshots go to ``snapshot_dir`` or
    ``settings.snapshot_dir``; with neither, nothing is snapshotted (and replay is impossible).
    """
    origins = [*settings.allow_origins, *allow_origins]
    guard = SSRFGuard(origins, allow_private=settings.allow_private)
    root = snapshot_dir or settings.snapshot_dir
    store = SnapshotStore(root, index_url=settings.snapshot_index_url) if root is not None else None
    return FetchChain(settings, guard, store, extract_workers=extract_workers)

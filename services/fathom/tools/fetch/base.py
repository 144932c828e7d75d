"""The fetch seam: a ``Fetcher`` turns a URL into a ``FetchedPage`` (raw body plus provenance)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class FetchedPage:
    url: str  # as requested
    final_url: str  # after redirects
    status: int
    content_type: str  # lower-cased media type without parameters, e.g. "text/html"
    body: bytes
    fetcher: str  # "httpx", "browser", "replay"
    fetched_at: datetime
    encoding: str | None = None  # charset from headers / meta, if known
    elapsed_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    truncated: bool = False  # body was cut at the size cap (HTML/text only; PDFs are refused)


@runtime_checkable
class Fetcher(Protocol):
    name: str

    async def fetch(self, url: str, *, deadline_s: float) -> FetchedPage: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class PageText:
    """Main text read out of a fetched page."""

    text: str
    title: str | None
    kind: str  # "html", "pdf", "text", "json"
    extractor: str  # e.g. "trafilatura", "lxml-fallback", "pypdf", "plain"
    truncated: bool = False


@dataclass(frozen=True)
class PageSnapshot:
    """Provenance of one stored body. Bodies are stored content-addressed by ``sha256``."""

    sha256: str
    url: str
    final_url: str
    status: int
    content_type: str
    fetched_at: datetime
    fetcher: str
    extractor_version: str
    size: int
    encoding: str | None = None
    truncated: bool = False

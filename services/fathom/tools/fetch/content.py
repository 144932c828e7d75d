"""Main text out of a fetched body: HTML (trafilatura, then a plain lxml reader), PDF, text, JSON.

Synchronous and CPU-bound on purpose: callers run it in an executor (see ``chain.py``).
"""

from __future__ import annotations

import io
import logging
import re

import lxml.etree
import lxml.html
import pypdf
import trafilatura
from trafilatura.metadata import extract_title

from fathom.core.config import FetchSettings
from fathom.core.errors import FetchError
from fathom.tools.fetch.base import FetchedPage, PageText
from fathom.tools.fetch.sniff import decode_body, looks_binary

# trafilatura logs every discarded page at WARNING ("discarding data"); refusals are ours to report.
logging.getLogger("trafilatura").setLevel(logging.ERROR)

# Bump the leading number whenever the reading logic changes what text comes out of a body.
EXTRACTOR_VERSION = f"fathom-content-2+trafilatura-{trafilatura.__version__}+pypdf-{pypdf.__version__}"

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
JSON_TYPES = frozenset({"application/json", "application/ld+json", "text/json"})
TEXT_TYPES = frozenset(
    {"text/plain", "text/markdown", "text/x-markdown", "text/csv", "text/tab-separated-values"}
)
XML_TYPES = frozenset({"application/xml", "text/xml", "application/rss+xml", "application/atom+xml"})

# Elements whose text is never main content.
_DROP = (
    "script",
    "style",
    "noscript",
    "template",
    "nav",
    "footer",
    "header",
    "aside",
    "form",
    "svg",
    "iframe",
)
_BLOCKS = (
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "p",
    "li",
    "pre",
    "blockquote",
    "td",
    "th",
    "dt",
    "dd",
    "figcaption",
)
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def content_kind(media_type: str) -> str | None:
    """The reader for a media type: "html", "pdf", "json", "xml", "text"; None if unsupported."""
    if media_type in HTML_TYPES:
        return "html"
    if media_type == "application/pdf":
        return "pdf"
    if media_type in JSON_TYPES or media_type.endswith("+json"):
        return "json"
    if media_type in XML_TYPES or media_type.endswith("+xml"):
        return "xml"
    if media_type in TEXT_TYPES or (media_type.startswith("text/") and media_type != "text/html"):
        return "text"
    return None


def read_page(page: FetchedPage, settings: FetchSettings) -> PageText:
    """Read ``page``'s main text, or raise ``FetchError`` if its type cannot be read."""
    kind = content_kind(page.content_type)
    if kind is None:
        raise FetchError(page.final_url, f"unsupported content type {page.content_type or 'unknown'}")
    if kind == "pdf":
        return read_pdf(page, settings)
    if looks_binary(page.body[:1024]):
        raise FetchError(page.final_url, f"unsupported content type {page.content_type} (binary body)")
    text = decode_body(page.body, page.encoding)
    if kind == "html":
        return read_html(text, settings, truncated=page.truncated)
    capped, cut = _cap(text.strip(), settings.max_text_chars)
    return PageText(text=capped, title=None, kind=kind, extractor="plain", truncated=cut or page.truncated)


def read_html(html: str, settings: FetchSettings, *, truncated: bool = False) -> PageText:
    text, title, extractor = "", None, "trafilatura"
    try:
        tree = trafilatura.load_html(html)
    except Exception:  # broken markup: the plain reader below still tries
        tree = None
    if tree is not None:
        try:
            # Metadata extraction (dates, authors, categories) was three quarters of the CPU time
            # per page and we keep only the title, which ``extract_title`` finds alone. fast=True
            # skips trafilatura's own fallback chain; ours below covers short pages. The tree is
            # copied by trafilatura, so the title is read from the untouched original.
            doc = trafilatura.bare_extraction(
                tree,
                with_metadata=False,
                favor_recall=True,
                include_comments=False,
                include_tables=True,
                fast=True,
            )
        except Exception:  # trafilatura raises assorted errors on broken markup; fall back below
            doc = None
        if doc is not None:  # a Document (or a dict in as_dict mode, which we do not use)
            text = (getattr(doc, "text", None) or "").strip()
        try:
            title = extract_title(tree) or None
        except Exception:
            title = None
    if len(text) < settings.js_min_text_chars:
        fallback, fallback_title = plain_html_text(html)
        if len(fallback) > len(text):
            text, extractor = fallback, "lxml-fallback"
        title = title or fallback_title
    if title and text and title not in text[: len(title) + 500]:
        # trafilatura drops a leading <h1> it took as the title; the heading belongs to the text.
        text = f"{title}\n{text}"
    capped, cut = _cap(text, settings.max_text_chars)
    return PageText(text=capped, title=title, kind="html", extractor=extractor, truncated=cut or truncated)


def plain_html_text(html: str) -> tuple[str, str | None]:
    """Headings and paragraphs in document order, boilerplate elements removed."""
    try:
        root = lxml.html.document_fromstring(html)
    except (lxml.etree.ParserError, ValueError):
        return "", None
    title_el = root.find(".//title")
    title = (title_el.text_content().strip() or None) if title_el is not None else None
    for el in list(root.iter(*_DROP)):
        if el.getparent() is not None:
            el.drop_tree()
    lines: list[str] = []
    for el in root.iter(*_BLOCKS):
        # Skip a block nested in another block (li > p): its text is already in the parent.
        if any(anc.tag in _BLOCKS for anc in el.iterancestors()):
            continue
        line = _SPACES.sub(" ", el.text_content()).strip()
        if line:
            lines.append(line)
    if not lines:
        body = root.find(".//body")
        source = body if body is not None else root
        lines = [ln.strip() for ln in _SPACES.sub(" ", source.text_content()).splitlines() if ln.strip()]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)), title


def read_pdf(page: FetchedPage, settings: FetchSettings) -> PageText:
    if len(page.body) > settings.max_pdf_bytes:
        raise FetchError(page.final_url, f"PDF larger than the {settings.max_pdf_bytes} byte cap")
    try:
        reader = pypdf.PdfReader(io.BytesIO(page.body))
        if reader.is_encrypted and not reader.decrypt(""):
            raise FetchError(page.final_url, "PDF is encrypted")
        total = len(reader.pages)
        parts: list[str] = []
        size = 0
        for i in range(min(total, settings.max_pdf_pages)):
            chunk = (reader.pages[i].extract_text() or "").strip()
            if chunk:
                parts.append(chunk)
                size += len(chunk) + 2
            if size >= settings.max_pdf_chars:
                break
        meta = reader.metadata
        title = str(meta.title).strip() if meta is not None and meta.title else None
    except FetchError:
        raise
    except Exception as exc:  # pypdf raises many types on damaged files
        raise FetchError(page.final_url, f"unreadable PDF ({type(exc).__name__}: {exc})") from None
    text, cut = _cap("\n\n".join(parts), settings.max_pdf_chars)
    if not text:
        raise FetchError(page.final_url, "PDF has no extractable text (scanned images?)")
    return PageText(
        text=text, title=title, kind="pdf", extractor="pypdf", truncated=cut or total > settings.max_pdf_pages
    )


def _cap(text: str, limit: int) -> tuple[str, bool]:
    if len(text) <= limit:
        return text, False
    return text[:limit], True

"""Main text out of a fetched body: HTML (cleaned, then trafilatura or a block reader), PDF, text, JSON.

Synchronous and CPU-bound on purpose: callers run it in an executor (see ``chain.py``).
"""

from __future__ import annotations

import io
import logging
import re
from typing import cast

import lxml.etree
import lxml.html
import pypdf
import trafilatura
from trafilatura.metadata import extract_title

from fathom.core.config import FetchSettings
from fathom.core.errors import FetchError, PageBlockedError
from fathom.tools.fetch.base import FetchedPage, PageText
from fathom.tools.fetch.cleaning import clean_tree, squash
from fathom.tools.fetch.interstitials import bot_check_sign, is_consent_wall
from fathom.tools.fetch.sniff import decode_body, looks_binary

# trafilatura logs every discarded page at WARNING ("discarding data"); refusals are ours to report.
logging.getLogger("trafilatura").setLevel(logging.ERROR)

# Bump the leading number whenever the reading logic changes what text comes out of a body.
EXTRACTOR_VERSION = f"fathom-content-3+trafilatura-{trafilatura.__version__}+pypdf-{pypdf.__version__}"

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
JSON_TYPES = frozenset({"application/json", "application/ld+json", "text/json"})
TEXT_TYPES = frozenset(
    {"text/plain", "text/markdown", "text/x-markdown", "text/csv", "text/tab-separated-values"}
)
XML_TYPES = frozenset({"application/xml", "text/xml", "application/rss+xml", "application/atom+xml"})

# Page furniture the block reader leaves out (trafilatura finds its own; see _is_part_of_the_text).
_BOILERPLATE = ("nav", "footer", "header", "aside", "form", "menu")
# Navigation that is not in a <nav>: ARIA navigation and breadcrumb trails.
_NAVIGATION = lxml.etree.XPath(
    ".//*[@role='navigation' or contains(@class, 'breadcrumb') or contains(@id, 'breadcrumb')]"
)
# Elements that start a new line of text.
_BLOCKS = frozenset(
    {
        "address",
        "article",
        "blockquote",
        "body",
        "br",
        "dd",
        "details",
        "div",
        "dl",
        "dt",
        "figcaption",
        "figure",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "li",
        "main",
        "ol",
        "p",
        "pre",
        "section",
        "summary",
        "table",
        "td",
        "th",
        "tr",
        "ul",
    }
)
# trafilatura's text "misses most of" the page when it is under _PART_MAX_CHARS and the block
# reader finds _PART_FACTOR times as much, at least _PART_MISSING_CHARS more. A full article that
# trafilatura read well is longer than the cap, so a long comment section cannot displace it.
_PART_MAX_CHARS = 3000
_PART_FACTOR = 1.8
_PART_MISSING_CHARS = 600
_SPACES = re.compile(r"[ \t\r\f\v\u00a0]+")


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
    text = decode_body(page.body, page.encoding, page.final_url)
    if kind == "html":
        return read_html(text, settings, truncated=page.truncated, url=page.final_url)
    capped, cut = _cap(text.strip(), settings.max_text_chars)
    return PageText(text=capped, title=None, kind=kind, extractor="plain", truncated=cut or page.truncated)


def read_html(html: str, settings: FetchSettings, *, truncated: bool = False, url: str = "") -> PageText:
    """Main text of an HTML page; ``PageBlockedError`` when the page is a bot check or consent wall.

    The tree is cleaned first (``cleaning.py``), then read twice: by trafilatura, and by the plain
    block reader below. trafilatura's text wins unless it is short (a page it cannot read) or a
    small part of what the page shows (it took one container, say the intro of a 40-item list,
    and left the items out).
    """
    root = _parse(html)
    if root is None:
        return PageText(text="", title=None, kind="html", extractor="lxml-fallback", truncated=truncated)
    title = _title(root)
    document_title = _title_element_text(root)
    cleaned = clean_tree(root)
    sign = bot_check_sign(document_title, cleaned.notice_text, html)
    if sign is not None:
        raise PageBlockedError(
            url, f"the site answered with a bot check instead of the page ({sign}); try another source"
        )
    text = _trafilatura_text(root)
    extractor = "trafilatura"
    # The cleaned tree's whole text bounds what the block reader can find: read blocks only when
    # they could change the choice.
    shown = squash(root.text_content())
    if len(text) < settings.js_min_text_chars or _misses_most_of(text, shown):
        blocks = block_text(root)  # drops navigation and other furniture: trafilatura is done
        short = len(text) < settings.js_min_text_chars
        if (short or _misses_most_of(text, blocks)) and len(blocks) > len(text):
            text, extractor = blocks, "lxml-fallback"
            title = title or document_title
    if is_consent_wall(text, len(cleaned.notice_text), cleaned.consent_chars):
        raise PageBlockedError(
            url, "the site answered with a cookie-consent wall instead of the page; try another source"
        )
    if title and text and title not in text[: len(title) + 500]:
        # trafilatura drops a leading <h1> it took as the title; the heading belongs to the text.
        text = f"{title}\n{text}"
    capped, cut = _cap(text, settings.max_text_chars)
    return PageText(text=capped, title=title, kind="html", extractor=extractor, truncated=cut or truncated)


def plain_html_text(html: str) -> tuple[str, str | None]:
    """Headings, paragraphs and other blocks in document order, from the cleaned tree."""
    root = _parse(html)
    if root is None:
        return "", None
    title = _title_element_text(root)
    clean_tree(root)
    return block_text(root), title


def block_text(root: lxml.html.HtmlElement) -> str:
    """The text of ``root`` one block per line, navigation and page furniture removed (in place)."""
    for el in [*root.iter(*_BOILERPLATE), *_NAVIGATION(root)]:
        if el.getparent() is not None and not _is_part_of_the_text(el):
            el.drop_tree()
    body = root.find("body")
    parts: list[str] = []
    pre = 0  # inside <pre>, line breaks are the text's own; elsewhere they are source layout

    def add(text: str | None) -> None:
        if text:
            parts.append(text if pre else text.replace("\n", " "))

    for event, el in lxml.etree.iterwalk(body if body is not None else root, events=("start", "end")):
        if not isinstance(el.tag, str):  # a comment or processing instruction: only its tail is text
            if event == "end":
                add(el.tail)
            continue
        block = el.tag in _BLOCKS
        if event == "start":
            pre += el.tag == "pre"
            if block:
                parts.append("\n")
            add(el.text)
        else:
            if block:
                parts.append("\n")
            pre -= el.tag == "pre"
            add(el.tail)
    lines = (_SPACES.sub(" ", line).strip() for line in "".join(parts).split("\n"))
    return "\n".join(line for line in lines if line)


def _is_part_of_the_text(el: lxml.html.HtmlElement) -> bool:
    # An article's own <header> holds its title and byline; ASP.NET pages wrap the whole body in
    # one <form>. Navigation and asides are furniture wherever they are.
    if el.tag in ("header", "footer"):
        return any(a.tag in ("article", "main") for a in el.iterancestors())
    if el.tag == "form":
        return any(el.find(f".//{tag}") is not None for tag in ("p", "h1", "article"))
    return False


def _misses_most_of(text: str, blocks: str) -> bool:
    """trafilatura's text is a small part of a page that has much more to read."""
    return (
        len(text) < _PART_MAX_CHARS
        and len(blocks) >= _PART_FACTOR * len(text)
        and len(blocks) - len(text) >= _PART_MISSING_CHARS
    )


def _parse(html: str) -> lxml.html.HtmlElement | None:
    try:
        tree = trafilatura.load_html(html)
    except Exception:  # broken markup: lxml's own parser may still read it
        tree = None
    if tree is not None:
        return cast(lxml.html.HtmlElement, tree)
    try:
        return lxml.html.document_fromstring(html)
    except (lxml.etree.ParserError, ValueError):
        return None


def _title(root: lxml.html.HtmlElement) -> str | None:
    try:
        return extract_title(root) or None
    except Exception:  # trafilatura's metadata code raises assorted errors on odd markup
        return None


def _title_element_text(root: lxml.html.HtmlElement) -> str | None:
    el = root.find(".//title")
    return (el.text_content().strip() or None) if el is not None else None


def _trafilatura_text(root: lxml.html.HtmlElement) -> str:
    try:
        # Metadata extraction (dates, authors, categories) was three quarters of the CPU time
        # per page and we keep only the title, which ``extract_title`` finds alone. fast=True
        # skips trafilatura's own fallback chain; ours (``block_text``) covers what it misses.
        # trafilatura works on a copy, so ``root`` stays as cleaned.
        doc = trafilatura.bare_extraction(
            root,
            with_metadata=False,
            favor_recall=True,
            include_comments=False,
            include_tables=True,
            fast=True,
        )
    except Exception:  # trafilatura raises assorted errors on broken markup; the block reader follows
        return ""
    return (getattr(doc, "text", None) or "").strip() if doc is not None else ""


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

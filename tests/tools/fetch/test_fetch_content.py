"""read_page: HTML main text, PDF (generated with reportlab), text/JSON/XML, refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from fathom.core.config import FetchSettings
from fathom.core.errors import FetchError
from fathom.tools.fetch.base import FetchedPage
from fathom.tools.fetch.content import EXTRACTOR_VERSION, plain_html_text, read_page
from fetch_site import ARTICLE_SENTENCE, PDF_SENTENCE, article_html, make_pdf

SETTINGS = FetchSettings()


def page(
    body: bytes, content_type: str, encoding: str | None = "utf-8", truncated: bool = False
) -> FetchedPage:
    return FetchedPage(
        url="https://example.org/p",
        final_url="https://example.org/p",
        status=200,
        content_type=content_type,
        body=body,
        fetcher="httpx",
        fetched_at=datetime.now(UTC),
        encoding=encoding,
        truncated=truncated,
    )


def test_article_main_text_without_boilerplate() -> None:
    text = read_page(page(article_html("Storm log", ARTICLE_SENTENCE).encode(), "text/html"), SETTINGS)
    assert text.kind == "html"
    assert text.extractor == "trafilatura"
    assert ARTICLE_SENTENCE in text.text
    assert "Storm log" in text.text  # the heading is part of the text
    assert "All rights reserved" not in text.text
    assert "Contact" not in text.text
    assert text.title == "Storm log"


def test_short_page_is_not_empty() -> None:
    html = (
        b"<html><head><title>Tiny</title></head><body><h2>Opening hours</h2><p>Open 9 to 5.</p></body></html>"
    )
    text = read_page(page(html, "text/html"), SETTINGS)
    assert "Open 9 to 5." in text.text
    assert "Opening hours" in text.text


def test_lxml_fallback_keeps_headings_and_paragraphs_in_order() -> None:
    html = (
        "<html><head><title>T</title><style>p{}</style></head><body><nav>menu</nav><h1>One</h1>"
        "<p>alpha</p><ul><li><p>beta</p></li></ul><script>var x=1</script><h2>Two</h2><p>gamma</p>"
        "<footer>foot</footer></body></html>"
    )
    text, title = plain_html_text(html)
    assert text.split("\n") == ["One", "alpha", "beta", "Two", "gamma"]
    assert title == "T"


def test_html_text_cap() -> None:
    settings = FetchSettings(max_text_chars=500)
    text = read_page(
        page(article_html("Long", ARTICLE_SENTENCE, paragraphs=40).encode(), "text/html"), settings
    )
    assert len(text.text) == 500
    assert text.truncated


def test_truncated_body_is_reported() -> None:
    text = read_page(
        page(article_html("Cut", ARTICLE_SENTENCE).encode(), "text/html", truncated=True), SETTINGS
    )
    assert text.truncated


def test_pdf_text_and_page_cap() -> None:
    text = read_page(page(make_pdf(3, PDF_SENTENCE), "application/pdf", encoding=None), SETTINGS)
    assert text.kind == "pdf" and text.extractor == "pypdf"
    assert text.text.count(PDF_SENTENCE) == 3
    assert text.title == "Rainfall report"
    assert not text.truncated

    capped = read_page(
        page(make_pdf(10, PDF_SENTENCE), "application/pdf", None), FetchSettings(max_pdf_pages=4)
    )
    assert capped.text.count(PDF_SENTENCE) == 4
    assert "Page 5 of" not in capped.text
    assert capped.truncated


def test_pdf_char_cap() -> None:
    text = read_page(
        page(make_pdf(10, PDF_SENTENCE), "application/pdf", None), FetchSettings(max_pdf_chars=150)
    )
    assert len(text.text) == 150
    assert text.truncated


def test_pdf_byte_cap_and_damaged_pdf() -> None:
    body = make_pdf(2, PDF_SENTENCE)
    with pytest.raises(FetchError, match="byte cap"):
        read_page(page(body, "application/pdf", None), FetchSettings(max_pdf_bytes=len(body) - 1))
    with pytest.raises(FetchError, match=r"unreadable PDF|no extractable text"):
        read_page(page(b"%PDF-1.4\n garbage garbage", "application/pdf", None), SETTINGS)


@pytest.mark.parametrize(
    ("body", "ctype", "kind"),
    [
        (json.dumps({"a": [1, 2], "b": "ünï"}).encode(), "application/json", "json"),
        (b"# Title\n\nSome *markdown*.", "text/markdown", "text"),
        (b"plain words\nsecond line", "text/plain", "text"),
        (b"<?xml version='1.0'?><feed><title>x</title></feed>", "application/atom+xml", "xml"),
    ],
)
def test_text_like_bodies_pass_through(body: bytes, ctype: str, kind: str) -> None:
    text = read_page(page(body, ctype), SETTINGS)
    assert text.kind == kind
    assert text.text == body.decode().strip()
    assert text.extractor == "plain"


def test_text_cap() -> None:
    text = read_page(page(b"x" * 1000, "text/plain"), FetchSettings(max_text_chars=100))
    assert text.text == "x" * 100 and text.truncated


@pytest.mark.parametrize(
    "ctype", ["image/png", "application/zip", "application/octet-stream", "video/mp4", ""]
)
def test_unsupported_types_refused(ctype: str) -> None:
    with pytest.raises(FetchError, match="unsupported content type"):
        read_page(page(b"\x89PNG\r\n\x1a\n\x00\x00", ctype, None), SETTINGS)


def test_binary_body_under_a_text_label_refused() -> None:
    with pytest.raises(FetchError, match="binary body"):
        read_page(page(b"PK\x03\x04\x00\x00\x00\x00", "text/plain", None), SETTINGS)


def test_extractor_version_names_its_parts() -> None:
    assert EXTRACTOR_VERSION.startswith("fathom-content-")
    assert "trafilatura-" in EXTRACTOR_VERSION and "pypdf-" in EXTRACTOR_VERSION

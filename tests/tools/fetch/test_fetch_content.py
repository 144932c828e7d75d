"""read_page: HTML main text, PDF (generated with reportlab), text/JSON/XML, refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fathom.core.config import FetchSettings
from fathom.core.errors import FetchError, PageBlockedError
from fathom.tools.fetch.base import FetchedPage, PageText
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


# Pages written like real sites (tests/tools/fetch/pages): what a reader must make of each.
PAGES = Path(__file__).parent / "pages"


def read_file(name: str) -> PageText:
    return read_page(page((PAGES / name).read_bytes(), "text/html"), SETTINGS)


def test_inline_css_hidden_boxes_and_a_cookie_banner_stay_out_of_the_article() -> None:
    # A CSS-in-JS news page: paragraphs are <div>s with <style> blocks between them and the only
    # <p> sits in a <noscript>. trafilatura's recall mode used to undo its own cleaning here and
    # return the CSS as text.
    text = read_file("news_article_cookie_banner.html").text
    for sentence in (
        "The Porthaven harbour authority has approved a £48 million sea wall",
        '"We cannot ask people to keep bailing out their kitchens every January,"',
        "Insurers paid out an estimated £6.1 million.",
        "Two board members voted against the plan",
        "Residents will be able to see the final drawings at a public exhibition",
    ):
        assert sentence in text
    for leak in (
        "{",  # any CSS rule
        "css-9xk2wd",
        "text-decoration",
        "We value your privacy",  # the OneTrust banner
        "843 partners",
        "Accept all cookies",
        "Sign up to the Courier",  # display: none
        "Loading comments",  # hidden
        "Comments need JavaScript",  # noscript
    ):
        assert leak not in text, leak


def test_a_rendered_consent_dialog_is_not_the_main_text() -> None:
    # The DOM after a render: the article is a few <div>s, the Didomi dialog has more text in <p>s.
    text = read_file("rendered_article_consent_dialog.html").text
    assert "A sleeper service between Zurich and Graz will run three nights a week" in text
    assert "Tickets go on sale on 18 November." in text
    assert "partners" not in text and "Agree and close" not in text


def test_a_consent_platform_banner_on_a_short_page_is_removed_and_the_page_kept() -> None:
    text = read_file("museum_hours_cookiebot.html").text
    assert "The museum is open every day from 10am to 5pm" in text
    assert "This website uses cookies" not in text


def test_a_forty_item_list_gives_all_its_items() -> None:
    # trafilatura took the intro's "entry-content" container and left the 40 items out.
    text = read_file("listicle_40_hikes.html").text
    assert "The Highlands hold more good walking than a lifetime can use up" in text
    for n in range(1, 41):
        assert f"Hike number {n}, " in text, n
    assert text.index("Hike number 9, ") < text.index("Hike number 10, ")  # document order
    assert "Advertise" not in text and "Climbing" not in text  # footer and navigation


def test_a_recipe_about_cookies_is_read_whole_and_not_taken_for_a_consent_wall() -> None:
    text = read_file("cookie_recipe.html").text
    assert "These cookies start with butter cooked until it smells of toffee" in text
    assert "225 g unsalted butter" in text  # the recipe card trafilatura left out
    assert "Heat the oven to 180°C. Roll 50 g balls" in text
    assert "Stored in an airtight tin, the cookies keep for four days." in text


def test_an_article_about_bot_challenges_is_content() -> None:
    text = read_file("bot_challenges_explainer.html").text
    assert 'got back a page titled "Just a moment..." instead of the article you wanted' in text
    assert "Treat the challenge as a refusal." in text


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("cloudflare_challenge.html", r"bot check .*Just a moment"),
        ("cloudflare_challenge_rendered.html", r"bot check .*Verifying you are human"),
        ("access_denied.html", r"bot check .*Access Denied"),
        ("captcha_robot_check.html", r"bot check .*verify you are a human"),
        ("consent_wall.html", r"cookie-consent wall"),
    ],
)
def test_bot_checks_and_consent_walls_are_refused(name: str, reason: str) -> None:
    with pytest.raises(PageBlockedError, match=reason) as info:
        read_file(name)
    assert isinstance(info.value, FetchError)
    assert info.value.url == "https://example.org/p"
    assert "try another source" in info.value.message


def test_template_text_is_not_main_text() -> None:
    html = (
        "<html><head><title>T</title></head><body><article><h1>Tides</h1>"
        "<template><p>Placeholder row that scripts clone.</p></template>"
        "<p>High tide at the harbour came at 06:42 on Monday and reached 5.1 metres.</p>"
        "</article></body></html>"
    )
    text = read_page(page(html.encode(), "text/html"), SETTINGS).text
    assert "High tide at the harbour came at 06:42" in text
    assert "Placeholder row" not in text


LONG_STORY = "".join(
    f"<div class='para'>Paragraph {i}: the lighthouse at Stoer Head was first lit in 1870 and was "
    f"automated in 1978; record {i} in the keepers' log notes a gale of force {i % 12}.</div>"
    for i in range(12)
)


def test_a_wrapper_named_like_a_consent_banner_is_not_taken_for_one() -> None:
    # Sites mark the page with the visitor's choice ("cookie-consent-given"); that wrapper is the page.
    html = (
        "<html><head><title>Stoer Head</title></head><body class='cookie-consent-accepted'>"
        f"<div id='wrapper' class='cookie-consent-given gdpr-ok'><h1>Stoer Head</h1>{LONG_STORY}"
        "<div class='small'>Read our privacy notice.</div></div></body></html>"
    )
    text = read_page(page(html.encode(), "text/html"), SETTINGS).text
    assert "Paragraph 0: the lighthouse at Stoer Head was first lit in 1870" in text
    assert "record 11 in the keepers' log" in text


def test_a_hidden_wrapper_that_holds_the_page_is_kept() -> None:
    # Server-rendered content that a script reveals: hiding it is layout, not "not shown".
    html = (
        "<html><head><title>Stoer Head</title></head><body>"
        f"<div id='app' style='display:none'><h1>Stoer Head</h1>{LONG_STORY}</div>"
        "<div class='toast' style='display: none'>Saved to your reading list.</div>"
        "</body></html>"
    )
    text = read_page(page(html.encode(), "text/html"), SETTINGS).text
    assert "record 11 in the keepers' log" in text
    assert "Saved to your reading list" not in text

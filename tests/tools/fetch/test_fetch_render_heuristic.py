"""When the auto path sends a page to the browser: ``looks_script_built`` on real page shapes."""

from __future__ import annotations

from fathom.core.config import FetchSettings
from fathom.corpus.documents import Document
from fathom.corpus.pages import render_article
from fathom.tools.fetch.chain import looks_script_built
from fathom.tools.fetch.content import read_html

DOC = Document(
    id="Harbour_log-000000000001",
    title="Harbour log",
    text="The harbour log of 1911 lists forty boats. " * 12,
    url="https://example.org/harbour",
    source="test",
)


def _text_chars(html: bytes) -> int:
    return len(read_html(html.decode(), FetchSettings()).text)


def test_local_web_js_shell_with_footer_text_is_rendered() -> None:
    shell = render_article(DOC, [], js=True)
    chars = _text_chars(shell)
    assert chars >= 200  # the licence footer alone passes the plain length test
    assert looks_script_built(shell, chars)


def test_static_article_is_not_rendered() -> None:
    page = render_article(DOC, [], js=False)
    assert not looks_script_built(page, _text_chars(page))


def test_no_scripts_never_rendered() -> None:
    assert not looks_script_built(b"<html><body><p>hi</p></body></html>", 2)


def test_tiny_text_with_scripts_is_rendered() -> None:
    assert looks_script_built(b"<html><body><div id=x></div><script src=a.js></script></body></html>", 0)


def test_signs_of_a_shell() -> None:
    text = 300
    app = b'<body><div id="root"></div><script src=/app.js></script><footer>' + b"f" * 300 + b"</footer>"
    assert looks_script_built(app, text)
    notice = (
        b"<body><noscript>You need to enable JavaScript to run this app.</noscript>"
        b"<script src=/a.js></script>"
    )
    assert looks_script_built(notice, text)
    inline = b"<body><p>short</p><script>" + b"x" * 5000 + b"</script></body>"
    assert looks_script_built(inline, text)


def test_long_text_with_scripts_is_not_rendered() -> None:
    page = b'<body><div id="root"></div><script>' + b"x" * 50_000 + b"</script></body>"
    assert not looks_script_built(page, 5_000)  # plenty of text: the HTML was enough

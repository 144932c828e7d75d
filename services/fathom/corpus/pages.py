"""HTML pages of the local web: one article page per document, an index, robots.txt.

Pages look like a real wiki: header, navigation, a sidebar of related links and a footer around
the article, so that the fetch path has boilerplate to strip. A deterministic share of articles
is rendered by JavaScript (the raw HTML has only a shell and an encoded script), so the fetch path
also needs its browser for some pages, as on the open web.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Sequence
from html import escape

from fathom.corpus.documents import Document
from fathom.corpus.snippets import split_sentences

SITE_NAME = "Fathom Local Wiki"
JS_MARKER = "data-fathom-js"
_PARAGRAPH_CHARS = 480


def is_js_page(doc_id: str, js_share: float) -> bool:
    """Whether this document's page builds its body with JavaScript (stable for a given share)."""
    if js_share <= 0:
        return False
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < js_share


def paragraphs(text: str) -> list[str]:
    """Group sentences into paragraphs of a few hundred characters."""
    out: list[str] = []
    current: list[str] = []
    size = 0
    for sentence in split_sentences(text):
        if current and size + len(sentence) > _PARAGRAPH_CHARS:
            out.append(" ".join(current))
            current, size = [], 0
        current.append(sentence)
        size += len(sentence) + 1
    if current:
        out.append(" ".join(current))
    return out or [text]


def _header() -> str:
    return (
        '<header class="site-header"><a class="logo" href="/">'
        f"{SITE_NAME}</a>"
        '<form class="search" action="/" method="get"><input name="q" placeholder="Search the wiki">'
        "</form></header>"
        '<nav class="top-nav"><ul><li><a href="/">Main page</a></li>'
        '<li><a href="/?page=1">All articles</a></li><li><a href="/robots.txt">About this site</a></li>'
        '<li><a href="/?page=2">Contents</a></li></ul></nav>'
    )


def _sidebar(related: Sequence[Document]) -> str:
    links = "".join(f'<li><a href="/wiki/{escape(d.id)}">{escape(d.title)}</a></li>' for d in related)
    return (
        '<aside class="sidebar"><h3>Related articles</h3>'
        f'<ul class="related">{links}</ul>'
        '<h3>Tools</h3><ul><li><a href="/">What links here</a></li>'
        '<li><a href="/">Printable version</a></li><li><a href="/">Cite this page</a></li></ul></aside>'
    )


def _footer(doc: Document | None) -> str:
    source = ""
    if doc is not None and doc.url:
        source = f' Original article: <a href="{escape(doc.url)}">{escape(doc.url)}</a>.'
    return (
        '<footer class="site-footer"><p>Text is available under the Creative Commons '
        "Attribution-ShareAlike License and other licences as stated in the corpus manifest; "
        f"additional terms may apply.{source}</p>"
        '<ul class="footer-links"><li><a href="/">Privacy policy</a></li><li><a href="/">About</a></li>'
        '<li><a href="/">Disclaimers</a></li><li><a href="/">Contact</a></li></ul></footer>'
    )


def _shell(title: str, body: str, html_attrs: str = "") -> bytes:
    return (
        f'<!DOCTYPE html><html lang="en"{html_attrs}><head><meta charset="utf-8">'
        f"<title>{escape(title)} - {SITE_NAME}</title>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<style>body{font-family:sans-serif;margin:0}main{max-width:46em;margin:1em auto}"
        ".sidebar{float:right;width:14em}</style></head>"
        f"<body>{body}</body></html>"
    ).encode()


# The script decodes the article from base64 so that the raw HTML holds none of its text.
_JS_RENDER = (
    "(function(){var raw=atob(document.getElementById('article-data').textContent);"
    "var bytes=new Uint8Array(raw.length);for(var i=0;i<raw.length;i++){bytes[i]=raw.charCodeAt(i);}"
    "var doc=JSON.parse(new TextDecoder('utf-8').decode(bytes));"
    "var main=document.getElementById('content');"
    "var h=document.createElement('h1');h.textContent=doc.title;main.appendChild(h);"
    "doc.paragraphs.forEach(function(p){var el=document.createElement('p');el.textContent=p;"
    "main.appendChild(el);});main.setAttribute('data-rendered','1');})();"
)


def render_article(doc: Document, related: Sequence[Document], js: bool) -> bytes:
    paras = paragraphs(doc.text)
    if js:
        payload = base64.b64encode(
            json.dumps({"title": doc.title, "paragraphs": paras}, ensure_ascii=False).encode("utf-8")
        ).decode("ascii")
        article = (
            f'<main id="content" class="article" {JS_MARKER}="1"></main>'
            "<noscript>This article needs JavaScript to display.</noscript>"
            f'<script type="application/octet-stream" id="article-data">{payload}</script>'
            f"<script>{_JS_RENDER}</script>"
        )
        attrs = f' {JS_MARKER}="1"'
    else:
        body = "".join(f"<p>{escape(p)}</p>" for p in paras)
        article = (
            f'<main id="content" class="article"><article><h1>{escape(doc.title)}</h1>'
            f'<div class="article-body">{body}</div></article></main>'
        )
        attrs = ""
    page = (
        _header()
        + '<div class="page">'
        + _sidebar(related)
        + '<div class="breadcrumbs"><a href="/">Main page</a> &rsaquo; Articles</div>'
        + article
        + "</div>"
        + _footer(doc)
    )
    return _shell(doc.title, page, attrs)


def render_index(entries: Sequence[tuple[str, str]], page: int, pages: int, total: int) -> bytes:
    items = "".join(f'<li><a href="/wiki/{escape(i)}">{escape(t)}</a></li>' for i, t in entries)
    nav = []
    if page > 1:
        nav.append(f'<a rel="prev" href="/?page={page - 1}">Previous</a>')
    if page < pages:
        nav.append(f'<a rel="next" href="/?page={page + 1}">Next</a>')
    body = (
        _header()
        + f'<main id="content"><h1>All articles</h1><p>{total} articles, page {page} of {pages}.</p>'
        + f'<ul class="article-list">{items}</ul><p class="pager">{" ".join(nav)}</p></main>'
        + _footer(None)
    )
    return _shell("All articles", body)


def render_private(path: str) -> bytes:
    body = (
        _header()
        + f"<main><h1>Staff area</h1><p>Crawlers are asked not to read {escape(path)}.</p></main>"
        + _footer(None)
    )
    return _shell("Staff area", body)


def render_not_found(path: str) -> bytes:
    body = (
        _header()
        + f"<main><h1>Not found</h1><p>There is no page at {escape(path)}.</p></main>"
        + _footer(None)
    )
    return _shell("Not found", body)


ROBOTS_TXT = b"User-agent: *\nDisallow: /private/\nAllow: /\n"

"""Clean an HTML tree before its main text is read.

trafilatura cleans a copy of the tree itself, but not well enough for real pages: in recall mode
it undoes its cleaning when that removed every ``<p>``, and the CSS of ``<style>`` blocks then came
out as text; it keeps the text of ``<template>`` elements; and it knows nothing of hidden elements
or of cookie-consent banners (after a render, a consent dialog with more text than a short
article was taken for the article). So the tree is cleaned here, once, and every reader sees the
cleaned tree.

Removed, in this order:
1. elements that never carry reading text: scripts, styles, templates, SVG, frames, embedded
   objects and media, form controls;
2. what the page does not show: ``<noscript>``, the ``hidden`` attribute, inline
   ``display:none`` or ``visibility:hidden``, a ``<dialog>`` that is not open;
3. cookie-consent containers: those of the common consent platforms by id or class (OneTrust,
   Cookiebot, Didomi, Usercentrics, Sourcepoint, Quantcast, TrustArc, ...) and generic names such
   as ``cookie-banner`` or ``consent-modal``, within six levels of ``<body>``, and modal dialogs
   (``<dialog>``, ``role="dialog"``, ``aria-modal``) about cookies or consent, at any depth.

A container named like a consent banner is removed only when its text speaks of cookies, consent
or privacy; no hidden element or consent container is removed when it holds the page's main
element, or most of its text with little consent talk in it (a site-wide wrapper that happens to
carry a ``cookie-consent-given`` class, or content that a script will reveal).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import lxml.etree
import lxml.html

# Step 1: never reading text.
NEVER_TEXT = (
    "script",
    "style",
    "template",
    "svg",
    "iframe",
    "frame",
    "frameset",
    "object",
    "embed",
    "canvas",
    "audio",
    "video",
    "button",
    "select",
    "textarea",
)
_HIDDEN_STYLE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.I)
# Candidates are found by XPath (in C) and confirmed in Python, so that no Python code runs for
# every element of a large page.
_HIDDEN_CANDIDATES = lxml.etree.XPath(".//*[@hidden or @style] | .//dialog[not(@open)]")
# Consent platforms put their banner near the top of the tree (mostly a child of <body>); looking
# no deeper than _CONSENT_MAX_DEPTH keeps pages with tens of thousands of ids cheap. Modal dialogs
# are looked for everywhere. A union is in document order.
_CONSENT_MAX_DEPTH = 6
_CONSENT_CANDIDATES = lxml.etree.XPath(
    " | ".join(
        "./" + "/".join(["*"] * depth) + "[@id or @class]" for depth in range(1, _CONSENT_MAX_DEPTH + 1)
    )
    + " | .//dialog | .//*[@role='dialog' or @role='alertdialog' or @aria-modal='true']"
)
_CONSENT_NAMES = re.compile(
    r"onetrust|optanon|ot-sdk|cookiebot|didomi|usercentrics|sp_message|sp-message|qc-cmp|quantcast"
    r"|trustarc|truste-|iubenda|osano|termly|cookieyes|cky-consent|cmplz|complianz|borlabs|klaro"
    r"|tarteaucitron|axeptio|consentmanager|cmpbox|fc-consent|gdpr"
    r"|cmp[-_]?(?:banner|container|modal|popup|wrapper|dialog)"
    r"|cookies?[-_]?(?:banner|bar|consent|notice|law|popup|modal|wall|message|overlay|dialog|disclaimer"
    r"|alert|warning|notification|box|container|layer|prompt|info)"
    r"|consent[-_]?(?:banner|bar|modal|popup|dialog|wall|layer|container|notice|overlay|box|prompt)"
    r"|cc[-_](?:window|banner)|eu-cookie|privacy[-_]?(?:banner|popup|notice|overlay|prompt)",
    re.I,
)
CONSENT_WORDS = re.compile(r"cookie|consent|privacy|gdpr|personal data|partners|tracking|personali[sz]", re.I)
_DIALOG_WORDS = re.compile(r"cookie|consent", re.I)
_MAIN_ELEMENTS = lxml.etree.XPath(
    "descendant-or-self::*[self::main or self::article or @role='main' or @itemprop='articleBody']"
)
_SPACES = re.compile(r"\s+")
_NEVER_CONSENT = frozenset({"html", "body", "main", "article"})
# Consent talk is dense: a banner names cookies, consent or partners every few sentences. A
# container with most of the page's text and sparser talk than this is the page, not a banner.
_CONSENT_CHARS_PER_WORD = 400


@dataclass
class CleanedTree:
    root: lxml.html.HtmlElement  # the same tree, cleaned in place
    notice_text: str  # the page's text after step 1: what it shows or tells (noscript included)
    consent_chars: int  # characters of consent-banner text removed in step 3


def squash(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def clean_tree(root: lxml.html.HtmlElement) -> CleanedTree:
    """Remove what is never main text from ``root`` (in place); see the module's notes."""
    for el in list(root.iter(*NEVER_TEXT)):
        _drop(el)
    body = root.find("body")
    page = body if body is not None else root
    notice_text = squash(page.text_content())
    total = len(notice_text)
    for el in list(root.iter("noscript")):
        _drop(el)
    # Reversed document order: an element's descendants come before it, so a nested match is
    # removed first and no text is counted twice.
    for el in reversed([e for e in _HIDDEN_CANDIDATES(page) if _is_hidden(e)]):
        if not _holds_the_page(el, total):
            _drop(el)
    consent_chars = 0
    for el in reversed([e for e in _CONSENT_CANDIDATES(page) if _may_be_consent(e)]):
        text = squash(el.text_content())
        if _is_consent_text(el, text) and not _holds_the_page(el, total, text):
            consent_chars += len(text)
            _drop(el)
    return CleanedTree(root, notice_text, consent_chars)


def _drop(el: lxml.html.HtmlElement) -> None:
    if el.getparent() is not None:
        el.drop_tree()  # keeps the element's tail text, which belongs to the parent


def _is_hidden(el: lxml.html.HtmlElement) -> bool:
    if el.tag in ("html", "body"):
        return False
    if el.get("hidden") is not None:
        return True
    if el.tag == "dialog" and el.get("open") is None:
        return True
    return bool(_HIDDEN_STYLE.search(el.get("style") or ""))


def _may_be_consent(el: lxml.html.HtmlElement) -> bool:
    if el.tag in _NEVER_CONSENT:
        return False
    return _is_modal(el) or _CONSENT_NAMES.search(_names(el)) is not None


def _is_modal(el: lxml.html.HtmlElement) -> bool:
    return el.tag == "dialog" or el.get("role") in ("dialog", "alertdialog") or el.get("aria-modal") == "true"


def _names(el: lxml.html.HtmlElement) -> str:
    return f"{el.get('id') or ''} {el.get('class') or ''}"


def _is_consent_text(el: lxml.html.HtmlElement, text: str) -> bool:
    if _CONSENT_NAMES.search(_names(el)):
        return CONSENT_WORDS.search(text) is not None
    return _DIALOG_WORDS.search(text) is not None  # a modal dialog: only one about cookies


def _holds_the_page(el: lxml.html.HtmlElement, total: int, text: str | None = None) -> bool:
    if _MAIN_ELEMENTS(el):
        return True
    text = squash(el.text_content()) if text is None else text
    if len(text) * 2 <= total:
        return False
    words = len(CONSENT_WORDS.findall(text))
    return words * _CONSENT_CHARS_PER_WORD < len(text)

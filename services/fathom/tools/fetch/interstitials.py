"""Pages that stand in for the page asked for: bot checks and cookie-consent walls.

A bot check (Cloudflare's "Just a moment...", "Checking your browser", "Access denied", a captcha,
"Are you a robot?") or a consent wall ("Before you continue ... Accept all / Reject all") has
text, and read as content it became the page's "evidence". Both are recognised here so that the
reader can refuse them with a clear error instead.

Both tests are built not to fire on ordinary pages that talk about these things (an article on
bot challenges that quotes "Just a moment...", a cookie recipe, a cookie policy):
- a bot check is short (its whole text, noscript notices included, is under ``BOT_CHECK_MAX_CHARS``)
  and shows at least two signs: a challenge title, a challenge phrase, or the markup of a
  challenge or captcha widget;
- a consent wall is a page whose main text, once the consent banners are removed, is almost
  nothing; or a short page whose main text is consent talk (cookies, a purpose such as partners
  or personalised ads, and a choice such as "Accept all"), with next to no other text.
"""

from __future__ import annotations

import re

from fathom.tools.fetch.cleaning import CONSENT_WORDS

BOT_CHECK_MAX_CHARS = 1500
CONSENT_WALL_MAX_CHARS = 2500
# Below this many characters of main text besides consent talk, a page says nothing else.
_OTHER_TEXT_MIN_CHARS = 200

_BOT_TITLE = re.compile(
    r"^\s*(?:just a moment|attention required|access denied|are you a (?:robot|human)|please wait"
    r"|security check|one more step|verify(?:ing)? you are (?:a )?human|human verification"
    r"|bot verification|robot check|pardon our interruption|you have been blocked|ddos-guard"
    r"|checking your browser)\s*[.!?\u2026]*\s*(?:[|\-\u2013\u2014:]\s*[^|]{0,60})?$",
    re.I,
)
_BOT_PHRASES = re.compile(
    r"checking your browser before accessing|enable javascript and cookies to continue"
    r"|please (?:turn on|enable) javascript and cookies|needs to review the security of your connection"
    r"|verify(?:ing)? (?:that )?you are (?:a )?human|are you a robot"
    r"|(?:make sure|prove) you(?:'|\u2019)?re not a robot"
    r"|you (?:don't|don\u2019t|do not) have permission to access|incapsula incident id"
    r"|request unsuccessful"
    r"|pardon our interruption|sorry, you have been blocked|unusual (?:traffic|activity) from your"
    r"|press (?:&|and) hold|access to this page has been denied|ddos protection by",
    re.I,
)
# Every phrase above contains one of these words.
_BOT_PHRASE_WORDS = (
    "browser",
    "javascript",
    "security",
    "human",
    "robot",
    "permission",
    "incapsula",
    "request",
    "interruption",
    "blocked",
    "unusual",
    "hold",
    "denied",
    "ddos",
)
_BOT_MARKUP = re.compile(
    r"_cf_chl_opt|/cdn-cgi/challenge-platform/|cf-turnstile|challenges\.cloudflare\.com|g-recaptcha"
    r"|h-captcha|captcha-delivery|px-captcha|_incapsula_resource|ddos-guard",
    re.I,
)
_CONSENT_CHOICES = re.compile(
    r"accept all|reject all|allow all|deny all|refuse all|agree and (?:close|continue)"
    r"|accept and (?:close|continue)|\bi agree\b|\bi accept\b"
    r"|manage (?:cookies|preferences|settings|options|choices)"
    r"|cookie settings|more options|continue without (?:agreeing|accepting)|consent preferences",
    re.I,
)
_CONSENT_PURPOSES = re.compile(r"consent|partners|personali[sz]ed|advertis|privacy|personal data", re.I)


def bot_check_sign(title: str | None, notice_text: str, html: str) -> str | None:
    """What shows that the page is a bot check (for the error message), or None if it is not one."""
    if len(notice_text) > BOT_CHECK_MAX_CHARS:
        return None
    signs: list[str] = []
    if title and _BOT_TITLE.match(title):
        signs.append(f"title {title.strip()!r}")
    lower = notice_text.lower()
    if any(word in lower for word in _BOT_PHRASE_WORDS):  # a plain search first: the regex is slow
        phrases = {m.group(0).lower(): m.group(0) for m in _BOT_PHRASES.finditer(notice_text)}
        signs.extend(repr(p) for p in phrases.values())
    if len(signs) == 1:  # the markup can only be the second sign; skip the scan otherwise
        markup = _BOT_MARKUP.search(html, 0, 200_000)
        if markup:
            signs.append(f"challenge markup {markup.group(0)!r}")
    if len(signs) < 2:
        return None
    return ", ".join(signs[:2])


def is_consent_wall(main_text: str, page_chars: int, consent_chars: int) -> bool:
    """The page is a consent wall rather than content (see the module's notes)."""
    if consent_chars >= _OTHER_TEXT_MIN_CHARS and len(main_text) < _OTHER_TEXT_MIN_CHARS:
        return True  # banners removed, and nothing left to read
    if page_chars > CONSENT_WALL_MAX_CHARS:
        return False
    if not (
        re.search(r"cookie", main_text, re.I)
        and _CONSENT_PURPOSES.search(main_text)
        and _CONSENT_CHOICES.search(main_text)
    ):
        return False
    other = sum(len(line) for line in main_text.splitlines() if not CONSENT_WORDS.search(line))
    return other < _OTHER_TEXT_MIN_CHARS

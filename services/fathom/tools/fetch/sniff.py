"""What a body is (media type) and how its bytes become text (charset).

Servers lie about both, so the declared header is a hint checked against the bytes: a body that
starts with ``%PDF-`` is a PDF whatever the header says; a body with NUL bytes is binary.
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from urllib.parse import urlsplit

import charset_normalizer

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"PK\x03\x04", "application/zip"),
    (b"\x1f\x8b", "application/gzip"),
    (b"RIFF", "application/octet-stream"),
    (b"\x00\x00\x01\x00", "image/x-icon"),
)
_HTML_START = re.compile(rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html|head|body|meta|title)\b", re.I | re.S)
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_:.\-]+)""", re.I)
_XML_DECL = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([a-zA-Z0-9_.\-]+)["']""", re.I)
_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# WHATWG Encoding: labels browsers read as a superset, because pages mislabel.
_SUPERSETS = {
    "iso-8859-1": "cp1252",
    "latin-1": "cp1252",
    "latin1": "cp1252",
    "ascii": "cp1252",
    "us-ascii": "cp1252",
    "iso-8859-9": "cp1254",
    "shift_jis": "cp932",
    "shift-jis": "cp932",
    "sjis": "cp932",
    "x-sjis": "cp932",
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "euc-kr": "cp949",
    "tis-620": "cp874",
}
# Country code top-level domains whose legacy pages use a Latin code page other than windows-1252.
_TLD_CODEPAGES = {
    **dict.fromkeys(("cz", "sk", "pl", "hu", "hr", "si", "ro", "rs", "ba", "me", "al"), "cp1250"),
    **dict.fromkeys(("tr", "az"), "cp1254"),
    **dict.fromkeys(("lt", "lv", "ee"), "cp1257"),
    "vn": "cp1258",
}
# Marks that sit between letters in ordinary Latin text: apostrophes, Catalan middle dot, dashes,
# soft hyphen and no-break space.
_IN_WORD_MARKS = frozenset("\u2019\u2018\u00b7\u2013\u2014\u00ad\u00a0\u00b4")
_WORD = re.compile(r"[^\W\d_]+")


def parse_content_type(header: str | None) -> tuple[str, str | None]:
    """``"text/html; charset=UTF-8"`` -> (``"text/html"``, ``"UTF-8"``)."""
    if not header:
        return "", None
    media, _, params = header.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip("\"'")
    return media.strip().lower(), charset


def looks_binary(head: bytes) -> bool:
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return False
    return b"\x00" in head[:1024]


def sniff_media_type(declared: str, head: bytes) -> str:
    """The media type to trust, from the declared one and the first bytes of the body."""
    for magic, media in _MAGIC:
        if head.startswith(magic):
            return media
    generic = declared in ("", "application/octet-stream", "binary/octet-stream", "application/unknown")
    if generic or declared == "text/plain":
        if _HTML_START.match(head[:1024]):
            return "text/html"
        if generic:
            return "application/octet-stream" if looks_binary(head) else "text/plain"
    return declared


def normalise_charset(label: str | None) -> str | None:
    """A Python codec name for ``label``, widened per WHATWG, or None when unknown."""
    if not label:
        return None
    label = label.strip().lower()
    label = _SUPERSETS.get(label, label)
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def declared_charset(media_type: str, header_charset: str | None, head: bytes) -> str | None:
    """Charset from BOM, then the header, then an in-document declaration (meta / xml)."""
    for bom, name in _BOMS:
        if head.startswith(bom):
            return name
    from_header = normalise_charset(header_charset)
    if from_header:
        return from_header
    if media_type in ("text/html", "application/xhtml+xml"):
        m = _META_CHARSET.search(head[:8192])
        if m:
            return normalise_charset(m.group(1).decode("ascii", "replace"))
    if "xml" in media_type:
        m = _XML_DECL.match(head[:512])
        if m:
            return normalise_charset(m.group(1).decode("ascii", "replace"))
    return None


def guess_charset(body: bytes, url: str | None = None) -> str:
    """No declaration: UTF-8 if it decodes, else a Latin code page for Latin text, else the detector.

    charset-normalizer cannot tell the Latin single-byte code pages apart on ordinary text: it
    read a French page in windows-1250 ("crème" became "crčme"), since the same bytes decode
    without error in both. Browsers settle this by a default: windows-1252 for Western locales.
    We do the same when the bytes decode in windows-1252 and read as Latin text there, unless the
    host's country code names another Latin code page (a Czech or Turkish site).
    """
    sample = body[:65536]
    try:
        sample.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError as exc:
        # A cut in the middle of a multi-byte sequence at the sample's end is still UTF-8.
        if exc.start >= len(sample) - 3 and len(body) > len(sample):
            return "utf-8"
    best = charset_normalizer.from_bytes(sample).best()
    detected = normalise_charset(best.encoding) if best is not None else None
    preferred = latin_codepage_for(url)
    if (best is None or _mostly_latin_letters(str(best))) and _reads_as_latin_text(sample, preferred):
        return preferred
    return detected or "cp1252"


def latin_codepage_for(url: str | None) -> str:
    """The Latin code page a page without a charset most likely uses, from its host's country code."""
    try:
        host = (urlsplit(url).hostname or "") if url else ""
    except ValueError:  # a malformed authority: no country to go by
        host = ""
    return _TLD_CODEPAGES.get(host.rstrip(".").rpartition(".")[2], "cp1252")


def _reads_as_latin_text(sample: bytes, codec: str) -> bool:
    """The bytes decode strictly in ``codec`` and look like text written in a Latin script there.

    Two signs of a wrong single-byte code page: a symbol wedged between letters (Polish "ł" read
    in windows-1252 is "³", so "Wrocław" shows as "Wroc³aw"), and words made only of accented
    letters (Cyrillic or Greek read in a Latin code page: "Ìîñêâà").
    """
    try:
        text = sample.decode(codec)
    except UnicodeDecodeError:
        return False
    non_ascii = wedged = 0
    for i in range(1, len(text) - 1):
        ch = text[i]
        if ch.isascii():
            continue
        non_ascii += 1
        if not ch.isalpha() and ch not in _IN_WORD_MARKS and text[i - 1].isalpha() and text[i + 1].isalpha():
            wedged += 1
    if wedged * 20 > non_ascii:
        return False
    accented_words = all_accented = 0
    for word in _WORD.findall(text):
        if len(word) >= 3 and not word.isascii():
            accented_words += 1
            all_accented += not any(c.isascii() for c in word)
    return all_accented * 2 <= accented_words


def _mostly_latin_letters(text: str) -> bool:
    letters = [c for c in text if c.isalpha() and not c.isascii()]
    if not letters:
        return True
    latin = sum(unicodedata.name(c, "").startswith("LATIN") for c in letters)
    return latin * 10 >= len(letters) * 9


def decode_body(body: bytes, encoding: str | None, url: str | None = None) -> str:
    """Decode with the known or guessed charset; undecodable bytes become U+FFFD, never an error."""
    codec = normalise_charset(encoding) or guess_charset(body, url)
    if codec == "utf-8" and body.startswith(codecs.BOM_UTF8):
        codec = "utf-8-sig"
    return body.decode(codec, errors="replace")

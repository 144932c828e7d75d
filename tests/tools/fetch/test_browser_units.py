"""Pure parts of the browser path: its content-encoding decoder (right bytes, never much past the
cap) and the origin key under which one fetch reuses a guard verdict."""

from __future__ import annotations

import gzip
import zlib

import pytest
from fathom.core.errors import FetchError
from fathom.tools.fetch.browser import _Inflater, _origin_key

PAGE = b"<p>The tide tables were kept in the harbour office.</p>" * 500


def _deflate_raw(data: bytes) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    return packer.compress(data) + packer.flush()


@pytest.mark.parametrize(
    ("encoding", "wire"),
    [
        ("gzip", gzip.compress(PAGE)),
        ("x-gzip", gzip.compress(PAGE)),
        ("deflate", zlib.compress(PAGE)),
        ("deflate", _deflate_raw(PAGE)),  # servers that send "deflate" without zlib framing
        ("", PAGE),
        ("identity", PAGE),
    ],
)
def test_decodes_in_small_reads(encoding: str, wire: bytes) -> None:
    inflater = _Inflater.for_encoding("http://example.org/", encoding)
    out = b"".join(inflater.feed(wire[i : i + 97], len(PAGE)) for i in range(0, len(wire), 97))
    assert out == PAGE


def test_a_bomb_yields_one_byte_past_the_room_per_read() -> None:
    bomb = gzip.compress(b" " * 50_000_000)  # ~50 kB on the wire
    inflater = _Inflater.for_encoding("http://example.org/", "gzip")
    assert len(inflater.feed(bomb, 1000)) == 1001


def test_unknown_or_broken_encodings_are_refused() -> None:
    with pytest.raises(FetchError, match="unsupported content-encoding 'br'"):
        _Inflater.for_encoding("http://example.org/", "br")
    inflater = _Inflater.for_encoding("http://example.org/", "gzip")
    with pytest.raises(FetchError, match="undecodable"):
        inflater.feed(b"this is not gzip at all", 1000)


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("http://a.example/x", "http://a.example:80"),
        ("http://a.example:80/x", "http://a.example:80"),
        ("https://A.example./", "https://a.example:443"),
        ("http://[::1]:8080/", "http://[::1]:8080"),
        # Whatever the key cannot vouch for goes to the guard itself.
        ("http://a.example:+80/", None),
        ("http://a.example:99999/", None),
        ("http://a.example:0/", None),
        ("http://a.example:\u0668\u0660/", None),  # Arabic-Indic "80"
        ("http://u:p@a.example/", None),
        ("ftp://a.example/", None),
        ("not a url", None),
    ],
)
def test_origin_key_covers_only_plainly_written_origins(url: str, key: str | None) -> None:
    assert _origin_key(url) == key

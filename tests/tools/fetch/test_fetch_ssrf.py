"""SSRF guard: hostile URLs of every class are refused; the allowlisted local origin is accepted."""

from __future__ import annotations

import ipaddress
import re
import socket

import pytest
from fathom.core.errors import ConfigError, SSRFError
from fathom.tools.fetch.ssrf import SSRFGuard, parse_ipv4_loose, system_resolver

# A resolver with fixed answers: names that "resolve" to forbidden places without touching
# /etc/hosts or the network. (The real getaddrinfo path is tested separately below.)
ANSWERS: dict[str, list[str]] = {
    "public.example": ["93.184.216.34"],
    "public6.example": ["2606:2800:220:1:248:1893:25c8:1946"],
    "rebind-loopback.example": ["127.0.0.1"],
    "rebind-private.example": ["10.1.2.3"],
    "rebind-metadata.example": ["169.254.169.254"],
    "rebind-v6.example": ["::1"],
    "rebind-mapped.example": ["::ffff:192.168.1.1"],
    "mixed.example": ["93.184.216.34", "127.0.0.1"],
    "cgnat.example": ["100.64.0.9"],
}


async def fixed_resolver(host: str, port: int) -> list[str]:
    if host not in ANSWERS:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    return list(ANSWERS[host])


HOSTILE = [
    # schemes and credentials
    "file:///etc/passwd",
    "ftp://example.com/",
    "gopher://127.0.0.1:6379/_INFO",
    "javascript:alert(1)",
    "data:text/html,hi",
    "http://user:pass@example.com/",
    "http://user@93.184.216.34/",
    # loopback, all spellings
    "http://127.0.0.1/",
    "http://127.0.0.2:8080/",
    "http://127.255.255.254/",
    "http://localhost/",
    "http://LOCALHOST./",
    "http://app.localhost/",
    "http://[::1]/",
    "http://[0:0:0:0:0:0:0:1]/",
    # numeric encodings of 127.0.0.1 and friends
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f.1/",
    "http://0x7f000001/",
    "http://127.1/",
    "http://127.0.1/",
    "http://017700000001/",
    "http://3232235777/",  # 192.168.1.1
    "http://0/",
    "http://134744072/",  # 8.8.8.8 in decimal: public, but ambiguous spelling is refused too
    "http://127.0.0.1./",
    # private, link-local, CGNAT, metadata
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://172.31.255.255/",
    "http://192.168.0.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://169.254.10.10/",
    "http://100.64.0.1/",
    "http://100.100.100.200/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://metadata/",
    "http://instance-data/latest/",
    "http://[fd00:ec2::254]/",
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    # unspecified, broadcast, multicast, reserved, test and benchmarking nets
    "http://0.0.0.0/",
    "http://0.1.2.3/",
    "http://[::]/",
    "http://255.255.255.255/",
    "http://224.0.0.1/",
    "http://239.255.255.250/",
    "http://[ff02::1]/",
    "http://240.0.0.1/",
    "http://192.0.2.10/",
    "http://198.51.100.7/",
    "http://203.0.113.9/",
    "http://198.18.0.1/",
    "http://192.0.0.192/",
    "http://[2001:db8::1]/",
    # IPv6 embeddings of forbidden IPv4 addresses
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:7f00:1]/",
    "http://[::ffff:169.254.169.254]/",
    "http://[::127.0.0.1]/",
    "http://[::ffff:10.0.0.1]/",
    "http://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "http://[2002:a9fe:a9fe::]/",  # 6to4 of 169.254.169.254
    "http://[64:ff9b::7f00:1]/",  # NAT64 of 127.0.0.1
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64 of metadata
    # host tricks
    "http://%31%32%37.0.0.1/",
    "http://１２７.０.０.１/",  # fullwidth digits fold to 127.0.0.1
    "http:///path-without-host",
    "http://exa mple.com/",
    # names that resolve to forbidden addresses
    "http://rebind-loopback.example/",
    "http://rebind-private.example:8080/",
    "http://rebind-metadata.example/",
    "http://rebind-v6.example/",
    "http://rebind-mapped.example/",
    "http://mixed.example/",  # one bad answer refuses the name
    "http://cgnat.example/",
    "http://unknown-name.example/",  # does not resolve
    # the allowlisted origin, but with another scheme or port
    "https://127.0.0.1:8765/",
    "http://127.0.0.1:8766/",
]


@pytest.fixture
def guard() -> SSRFGuard:
    return SSRFGuard(["http://127.0.0.1:8765"], resolver=fixed_resolver)


def test_there_are_enough_hostile_cases() -> None:
    assert len(HOSTILE) >= 40
    assert len(set(HOSTILE)) == len(HOSTILE)


@pytest.mark.parametrize("url", HOSTILE)
async def test_hostile_url_refused(guard: SSRFGuard, url: str) -> None:
    with pytest.raises(SSRFError) as info:
        await guard.check(url)
    message = str(info.value)
    assert "refused" in message or "cannot resolve" in message
    assert info.value.tool == "query_url"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://10.0.0.1/", "private network"),
        ("http://169.254.169.254/", "cloud metadata"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://2130706433/", "means 127.0.0.1"),
        ("http://0x7f.1/", "means 127.0.0.1"),
        ("http://[::ffff:127.0.0.1]/", "embedding 127.0.0.1"),
        ("http://rebind-private.example/", "resolves to 10.1.2.3"),
        ("ftp://example.com/", "scheme 'ftp'"),
        ("http://u:p@example.com/", "credentials"),
        ("http://metadata.google.internal/", "metadata name"),
    ],
)
async def test_refusal_says_why(guard: SSRFGuard, url: str, reason: str) -> None:
    with pytest.raises(SSRFError, match=reason):
        await guard.check(url)


async def test_allowlisted_origin_accepted_exactly(guard: SSRFGuard) -> None:
    target = await guard.check("http://127.0.0.1:8765/some/page?q=1")
    assert target.allowlisted
    assert target.ips == ("127.0.0.1",)
    assert target.origin == "http://127.0.0.1:8765"


async def test_public_addresses_accepted(guard: SSRFGuard) -> None:
    for url, ip in [
        ("http://93.184.216.34/", "93.184.216.34"),
        ("https://public.example/a", "93.184.216.34"),
        ("http://public6.example:8080/", "2606:2800:220:1:248:1893:25c8:1946"),
        ("http://[2606:4700::1111]/", "2606:4700::1111"),
        ("https://PUBLIC.example./", "93.184.216.34"),
    ]:
        target = await guard.check(url)
        assert target.ips == (ip,)
        assert not target.allowlisted


async def test_allow_private_lets_rfc1918_through_but_never_loopback_or_metadata() -> None:
    guard = SSRFGuard([], allow_private=True, resolver=fixed_resolver)
    assert (await guard.check("http://10.0.0.1/")).ips == ("10.0.0.1",)
    assert (await guard.check("http://[fd12::1]/")).ips == ("fd12::1",)
    for url in (
        "http://127.0.0.1/",
        "http://169.254.169.254/",
        "http://[fd00:ec2::254]/",
        "http://100.64.0.1/",
    ):
        with pytest.raises(SSRFError):
            await guard.check(url)


async def test_checked_answer_is_pinned_against_rebinding() -> None:
    answers = {"flip.example": ["93.184.216.34"]}

    async def flipping(host: str, port: int) -> list[str]:
        return list(answers[host])

    guard = SSRFGuard([], resolver=flipping)
    await guard.check("http://flip.example/")
    answers["flip.example"] = ["127.0.0.1"]  # the attacker's DNS now answers loopback
    # The connection layer asks for the pinned address, not a fresh answer.
    assert await guard.pinned_ips("flip.example", 80) == ("93.184.216.34",)
    # A host never checked is checked strictly at connect time.
    answers["other.example"] = ["127.0.0.1"]
    with pytest.raises(SSRFError):
        await guard.pinned_ips("other.example", 80)


# Names of our own, each answered by the real getaddrinfo on a numeric spelling: the system
# resolver's path runs for real (the C library reads numbers itself, without DNS or /etc/hosts),
# and the answer is the same on every machine, so the test can neither skip nor flake.
NUMERIC_SPELLINGS = {
    "loop.fathom-test": "127.0.0.1",
    "loop-aton.fathom-test": "0x7f.1",  # inet_aton's reading: 127.0.0.1
    "loop6.fathom-test": "::1",
    "mapped.fathom-test": "::ffff:127.0.0.1",
    "zone.fathom-test": "fe80::1%1",  # the scope id is stripped, the link-local address is refused
    "metadata.fathom-test": "169.254.169.254",
    "private.fathom-test": "10.20.30.40",
}


async def real_getaddrinfo(host: str, port: int) -> list[str]:
    return await system_resolver(NUMERIC_SPELLINGS[host], port)


async def test_real_getaddrinfo_answers_are_what_the_guard_checks() -> None:
    assert await real_getaddrinfo("loop.fathom-test", 80) == ["127.0.0.1"]
    assert await real_getaddrinfo("loop-aton.fathom-test", 80) == ["127.0.0.1"]
    assert await real_getaddrinfo("loop6.fathom-test", 443) == ["::1"]
    assert await real_getaddrinfo("zone.fathom-test", 80) == ["fe80::1"]


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("loop.fathom-test", "resolves to 127.0.0.1 (loopback)"),
        ("loop-aton.fathom-test", "resolves to 127.0.0.1 (loopback)"),
        ("loop6.fathom-test", "resolves to ::1 (loopback)"),
        ("mapped.fathom-test", "embedding 127.0.0.1"),
        ("zone.fathom-test", "resolves to fe80::1 (link-local)"),
        ("metadata.fathom-test", "cloud metadata"),
        ("private.fathom-test", "private network"),
    ],
)
async def test_real_getaddrinfo_name_resolving_to_a_local_address_is_refused(host: str, reason: str) -> None:
    guard = SSRFGuard(resolver=real_getaddrinfo)
    with pytest.raises(SSRFError, match=re.escape(reason)):
        await guard.check(f"http://{host}/")
    # The connection layer's own check goes the same way.
    with pytest.raises(SSRFError, match=re.escape(reason)):
        await guard.pinned_ips(host, 8080)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://93.184.216.34:99999/", "port 99999 is outside 1-65535"),
        ("http://93.184.216.34:65536/", "port 65536 is outside 1-65535"),
        ("https://public.example:70000/a", "port 70000 is outside 1-65535"),
        ("http://[2606:4700::1111]:99999/", "port 99999 is outside 1-65535"),
        ("http://93.184.216.34:0/", "port 0 is outside 1-65535"),
        ("http://93.184.216.34:" + "9" * 30 + "/", "port 99999999999999999999... is outside"),
        ("http://93.184.216.34:-1/", "invalid port '-1'"),
        ("http://93.184.216.34:+80/", "invalid port '+80'"),
        ("http://93.184.216.34:\u0668\u0660/", "invalid port"),  # Arabic-Indic "80"
        ("http://u:p@93.184.216.34:99999/", "credentials"),  # the first refusal wins
        # The allowlisted origin's port plus 65536: the same socket port once truncated to 16 bits.
        ("http://127.0.0.1:74301/", "port 74301 is outside 1-65535"),
    ],
)
async def test_bad_ports_refused_with_the_port_named(guard: SSRFGuard, url: str, reason: str) -> None:
    with pytest.raises(SSRFError, match=re.escape(reason)) as info:
        await guard.check(url)
    assert info.value.tool == "query_url"


async def test_good_ports_accepted(guard: SSRFGuard) -> None:
    for url, port in [
        ("http://93.184.216.34:65535/", 65535),
        ("http://93.184.216.34:1/", 1),
        ("http://93.184.216.34:/", 80),  # a bare colon means the default port
        ("https://93.184.216.34:0443/", 443),  # leading zeros: still ASCII digits
        ("http://[2606:4700::1111]:8080/", 8080),
    ]:
        assert (await guard.check(url)).port == port


def test_allowlisted_origin_with_a_bad_port_is_a_config_error() -> None:
    for origin, reason in [
        ("http://127.0.0.1:99999", "port 99999 is outside 1-65535"),
        ("http://127.0.0.1:+8088", "invalid port '+8088'"),
        ("ftp://127.0.0.1:21", "scheme://host[:port]"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(reason)):
            SSRFGuard([origin])


def test_loose_ipv4_parser_matches_inet_aton() -> None:
    for spelling in ("2130706433", "0177.0.0.1", "0x7f.1", "127.1", "0x7F.0.0.1", "127.0.0.1"):
        assert parse_ipv4_loose(spelling) == ipaddress.IPv4Address(socket.inet_aton(spelling))
    assert parse_ipv4_loose("example.com") is None
    assert parse_ipv4_loose("1.2.3.example") is None
    with pytest.raises(ValueError):
        parse_ipv4_loose("256.1.1.1")
    with pytest.raises(ValueError):
        parse_ipv4_loose("1.2.3.4.5")

"""SSRF guard: decide whether a URL may be fetched, and pin the addresses that were checked.

The guard parses URLs with httpx's own parser (the one the client uses), so the host we check is
the host we connect to. Every address a name resolves to must be allowed; one bad answer refuses
the whole name. Checked answers are remembered for a short while and handed to the connection
layer (``pinned_ips``), which connects to exactly those addresses: a DNS answer that changes
between check and connect (rebinding) cannot move the connection somewhere else.

Policy, in order:
1. scheme must be http or https; no credentials in the URL; the host must be plain ASCII
   (after IDNA), without percent-escapes, zone ids or other odd characters; a port must be
   written in ASCII digits and lie in 1-65535 (httpx reads ``:+80`` or Arabic-Indic digits as
   port 80 and passes ``:99999`` on to the socket, which fails with ``OverflowError``);
2. an origin (scheme://host:port) listed in ``allow_origins`` skips the address checks, and only
   that exact origin (local mode lists its own local web and nothing else);
3. IPv4 literals must be in canonical dotted-quad form (``2130706433``, ``0177.0.0.1``,
   ``0x7f.1`` and ``127.1`` are refused: browsers and C resolvers read them as 127.0.0.1);
4. cloud-metadata and local-only names are refused by name;
5. every resolved address must be globally routable: loopback, private, link-local, CGNAT,
   multicast, reserved, documentation/benchmarking nets and IPv6 forms embedding a forbidden IPv4
   address (mapped, compatible, 6to4, NAT64, Teredo) are refused. ``allow_private`` lets RFC 1918
   and fc00::/7 through (a self-hosted intranet deployment), never loopback or metadata.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpx
import idna

from fathom.core.errors import ConfigError, SSRFError

Resolver = Callable[[str, int], Awaitable[list[str]]]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_PORT = 65535
# The authority of a URL as httpx splits it (scheme, "//", then up to the first / ? or #).
_AUTHORITY = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://([^/?#]*)")
_NAME_CHARS = re.compile(r"^[a-z0-9_.-]+$")
_RESOLVE_TTL_S = 60.0

# Names that reach a cloud provider's instance metadata or this machine, whatever DNS says.
_BLOCKED_NAMES = frozenset(
    {
        "localhost",
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.azure.internal",
    }
)
_BLOCKED_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa", ".arpa")

_METADATA_IPS = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254", "100.100.100.200", "192.0.0.192")
)

# (network, reason). Checked before the catch-all ``is_global`` test so refusals say why.
_FORBIDDEN: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), reason)
    for net, reason in (
        ("0.0.0.0/8", "'this network' (0.0.0.0/8)"),
        ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"),
        ("100.64.0.0/10", "carrier-grade NAT (100.64/10)"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation net (TEST-NET-1)"),
        ("198.51.100.0/24", "documentation net (TEST-NET-2)"),
        ("203.0.113.0/24", "documentation net (TEST-NET-3)"),
        ("198.18.0.0/15", "benchmarking net"),
        ("224.0.0.0/4", "multicast"),
        ("255.255.255.255/32", "broadcast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"),
        ("::1/128", "loopback"),
        ("fe80::/10", "link-local"),
        ("fec0::/10", "site-local"),
        ("ff00::/8", "multicast"),
        ("2001:db8::/32", "documentation net"),
        ("2001:2::/48", "benchmarking net"),
        ("100::/64", "discard-only"),
    )
)
_PRIVATE: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


@dataclass(frozen=True)
class Target:
    """A URL that passed the guard, with the addresses that were checked for it."""

    url: str
    scheme: str
    host: str  # lower-case ASCII, no brackets, no trailing dot
    port: int
    ips: tuple[str, ...]
    allowlisted: bool

    @property
    def origin(self) -> str:
        return origin_of(self.scheme, self.host, self.port)


def origin_of(scheme: str, host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def normalise_host(host: str) -> str:
    """The form used for checks, pins and allowlist matching."""
    return host.strip("[]").rstrip(".").lower()


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve through the event loop's getaddrinfo (a thread, does not block the loop)."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    seen: dict[str, None] = {}
    for info in infos:
        addr = str(info[4][0]).split("%", 1)[0]
        seen[addr] = None
    return list(seen)


def parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """Read ``host`` the way inet_aton / WHATWG do (decimal, octal, hex, 1-4 parts).

    Returns None when the host is a name rather than a number.
    """
    parts = host.split(".")
    if not parts or not _is_number(parts[-1]):
        return None
    if len(parts) > 4 or not all(_is_number(p) for p in parts):
        raise ValueError("malformed numeric host")
    values = [_number(p) for p in parts]
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        raise ValueError("numeric host out of range")
    value = last
    for i, v in enumerate(head):
        value += v << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def _is_number(part: str) -> bool:
    p = part.lower()
    if p.startswith("0x"):
        return all(c in "0123456789abcdef" for c in p[2:])
    return p.isdigit()


def _number(part: str) -> int:
    p = part.lower()
    if p.startswith("0x"):
        return int(p[2:] or "0", 16)
    if len(p) > 1 and p.startswith("0"):
        if any(c not in "01234567" for c in p):
            raise ValueError("bad octal part")
        return int(p, 8)
    return int(p)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64, Teredo)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    packed = int(ip)
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(packed & 0xFFFFFFFF)
    # IPv4-compatible (::a.b.c.d, deprecated): top 96 bits zero, and not :: or ::1 themselves.
    if packed >> 32 == 0 and packed > 1:
        return ipaddress.IPv4Address(packed)
    return None


def address_refusal(ip: IPAddress, *, allow_private: bool = False) -> str | None:
    """Why ``ip`` must not be contacted, or None if it may."""
    if ip in _METADATA_IPS:
        return "cloud metadata address"
    if isinstance(ip, ipaddress.IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            reason = address_refusal(inner, allow_private=allow_private)
            if reason:
                return f"IPv6 address embedding {inner} ({reason})"
    for net, reason in _FORBIDDEN:
        if ip.version == net.version and ip in net:
            return reason
    if any(ip.version == net.version and ip in net for net in _PRIVATE):
        return None if allow_private else "private network"
    if not ip.is_global:
        return "not globally routable"
    return None


class SSRFGuard:
    """Checks URLs before (and, through ``pinned_ips``, while) anything connects to them."""

    def __init__(
        self,
        allow_origins: Iterable[str] = (),
        allow_private: bool = False,
        resolver: Resolver | None = None,
    ) -> None:
        self._allow = frozenset(_normalise_origin(o) for o in allow_origins)
        self._allow_private = allow_private
        self._resolver: Resolver = resolver or system_resolver
        # What the connection layer connects to (strict checks and allowlisted origins alike).
        self._pins: dict[tuple[str, int], tuple[tuple[str, ...], float]] = {}
        # Answers that passed the strict policy; an allowlisted answer never lands here.
        self._checked: dict[tuple[str, int], tuple[tuple[str, ...], float]] = {}

    @property
    def allow_origins(self) -> frozenset[str]:
        return self._allow

    def is_allowlisted(self, url: str) -> bool:
        try:
            u = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            return False
        scheme = u.scheme.lower()
        port = u.port or DEFAULT_PORTS.get(scheme, 0)
        return origin_of(scheme, normalise_host(u.host), port) in self._allow

    async def check(self, url: str) -> Target:
        """Return the checked target or raise ``SSRFError`` saying why the URL is refused."""
        try:
            u = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise SSRFError(url, f"refused: malformed URL ({exc})") from None
        scheme = u.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise SSRFError(url, f"refused: scheme {scheme or '(none)'!r} is not http or https")
        if u.userinfo:
            raise SSRFError(url, "refused: credentials in URL")
        host = self._clean_host(url, u.host)
        try:
            port = port_of(url, u, scheme)
        except ValueError as exc:
            raise SSRFError(url, f"refused: {exc}") from None
        if origin_of(scheme, host, port) in self._allow:
            ips = await self._resolve_any(url, host, port)
            self._pin(host, port, ips)
            return Target(url, scheme, host, port, ips, allowlisted=True)
        ips = await self._resolve_checked(url, host, port)
        return Target(url, scheme, host, port, ips, allowlisted=False)

    async def pinned_ips(self, host: str, port: int) -> tuple[str, ...]:
        """Addresses to connect to for ``host:port``: those of the last check, else a fresh check.

        Called by the connection layer; a host that was never checked is checked here with the
        strict policy (no allowlist, since the scheme is unknown at this layer).
        """
        host = normalise_host(host)
        pin = self._pins.get((host, port))
        if pin is not None and pin[1] > time.monotonic():
            return pin[0]
        return await self._resolve_checked(f"//{host}:{port}", host, port)

    def _clean_host(self, url: str, raw: str) -> str:
        host = normalise_host(raw)
        if not host:
            raise SSRFError(url, "refused: URL has no host")
        if "%" in host:
            raise SSRFError(url, "refused: percent-escapes or zone ids in host")
        try:
            ipaddress.ip_address(host)
            return host
        except ValueError:
            pass
        if not host.isascii():
            try:
                host = idna.encode(host, uts46=True).decode("ascii")
            except idna.IDNAError as exc:
                raise SSRFError(url, f"refused: invalid international host ({exc})") from None
        if not _NAME_CHARS.match(host) or ".." in host:
            raise SSRFError(url, f"refused: invalid characters in host {host!r}")
        return host

    async def _resolve_any(self, url: str, host: str, port: int) -> tuple[str, ...]:
        try:
            return (str(ipaddress.ip_address(host)),)
        except ValueError:
            pass
        try:
            return tuple(await self._resolver(host, port))
        except OSError as exc:
            raise SSRFError(url, f"cannot resolve host {host!r} ({exc})") from None

    async def _resolve_checked(self, url: str, host: str, port: int) -> tuple[str, ...]:
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is None:
            try:
                loose = parse_ipv4_loose(host)
            except ValueError as exc:
                raise SSRFError(url, f"refused: {exc} {host!r}") from None
            if loose is not None:
                reason = address_refusal(loose, allow_private=self._allow_private)
                detail = f"; it means {loose} ({reason})" if reason else f"; it means {loose}"
                raise SSRFError(url, f"refused: non-canonical IPv4 form {host!r}{detail}")
        if literal is not None:
            reason = address_refusal(literal, allow_private=self._allow_private)
            if reason:
                raise SSRFError(url, f"refused: {literal} is {reason}")
            ips: tuple[str, ...] = (str(literal),)
        else:
            if host in _BLOCKED_NAMES or host.endswith(_BLOCKED_SUFFIXES):
                raise SSRFError(url, f"refused: {host!r} is a local-only or metadata name")
            cached = self._checked.get((host, port))
            if cached is not None and cached[1] > time.monotonic():
                self._pin(host, port, cached[0])
                return cached[0]
            resolved = await self._resolve_any(url, host, port)
            if not resolved:
                raise SSRFError(url, f"cannot resolve host {host!r} (no addresses)")
            for addr in resolved:
                try:
                    ip = ipaddress.ip_address(addr)
                except ValueError:
                    raise SSRFError(url, f"refused: resolver returned {addr!r}") from None
                reason = address_refusal(ip, allow_private=self._allow_private)
                if reason:
                    raise SSRFError(url, f"refused: {host!r} resolves to {ip} ({reason})")
            ips = resolved
            _remember(self._checked, host, port, ips)
        self._pin(host, port, ips)
        return ips

    def _pin(self, host: str, port: int, ips: tuple[str, ...]) -> None:
        _remember(self._pins, host, port, ips)


def _remember(
    table: dict[tuple[str, int], tuple[tuple[str, ...], float]], host: str, port: int, ips: tuple[str, ...]
) -> None:
    if len(table) > 4096:  # bounded; stale entries are cheap to recompute
        now = time.monotonic()
        for key in [k for k, v in table.items() if v[1] <= now]:
            del table[key]
        if len(table) > 4096:
            table.clear()
    table[(host, port)] = (ips, time.monotonic() + _RESOLVE_TTL_S)


def port_of(url: str, u: httpx.URL, scheme: str) -> int:
    """The port ``url`` connects to; ``ValueError`` saying why when it is malformed or out of range."""
    written = raw_port(url)
    if written and not (written.isascii() and written.isdigit()):
        raise ValueError(f"invalid port {written[:20]!r} (ASCII digits only)")
    port = DEFAULT_PORTS[scheme] if u.port is None else u.port
    if not 1 <= port <= MAX_PORT:
        shown = str(port) if len(str(port)) <= 20 else str(port)[:20] + "..."
        raise ValueError(f"port {shown} is outside 1-{MAX_PORT}")
    return port


def raw_port(url: str) -> str | None:
    """The port as written in ``url`` ("" for a bare colon), None when there is none."""
    m = _AUTHORITY.match(url)
    if m is None:
        return None
    hostport = m.group(1).rpartition("@")[2]  # userinfo ends at the last "@", as httpx reads it
    if hostport.startswith("["):
        rest = hostport.partition("]")[2]
        return rest[1:] if rest.startswith(":") else (rest or None)
    _, colon, port = hostport.partition(":")
    return port if colon else None


def _normalise_origin(origin: str) -> str:
    try:
        u = httpx.URL(origin)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"allowlisted origin {origin!r} is not a URL ({exc})") from None
    scheme = u.scheme.lower()
    if scheme not in DEFAULT_PORTS or not u.host:
        raise ConfigError(f"allowlisted origin must be scheme://host[:port], got {origin!r}")
    try:
        port = port_of(origin, u, scheme)
    except ValueError as exc:
        raise ConfigError(f"allowlisted origin {origin!r}: {exc}") from None
    return origin_of(scheme, normalise_host(u.host), port)

"""A real, hostile little web for the fetch tests: threaded HTTP servers on 127.0.0.1 and 127.0.0.2.

The main origin on 127.0.0.1 is the one tests allowlist; an "internal" origin on 127.0.0.2 is what
redirects try to reach. Routes are plain functions below so the hostile cases are easy to read.
(A module with its own name, not conftest, so tests can import it without clashing with other
folders' conftest modules.)
"""

from __future__ import annotations

import io
import json
import random
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from reportlab.lib.pagesizes import A4
from reportlab.pdfgen import canvas

SECRET = "TOPSECRET-internal-credentials-4242"
ARTICLE_SENTENCE = "The lighthouse keeper counted exactly 217 ships during the winter storm."
JS_SENTENCE = "This paragraph was written by JavaScript after the page loaded."
XHR_SENTENCE = "Data fetched by the script says the reservoir holds 48 million litres."
PDF_SENTENCE = "Quarterly rainfall in the northern valley rose by 12 percent."

Reply = tuple[int, dict[str, str], bytes | Callable[[BaseHTTPRequestHandler], None]]


def article_html(title: str, sentence: str, paragraphs: int = 6) -> str:
    body = "".join(
        "<p>"
        + " ".join(
            f"Paragraph {j}.{i} discusses the coastal weather records in some detail, with dates and places."
            for i in range(3)
        )
        + "</p>"
        for j in range(paragraphs)
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title></head><body>"
        "<nav><a href='/'>Home</a> | <a href='/about'>About</a> | <a href='/contact'>Contact</a></nav>"
        f"<article><h1>{title}</h1><p>{sentence}</p>{body}</article>"
        "<footer>Copyright 2024 The Coastal Society. All rights reserved.</footer></body></html>"
    )


def make_pdf(pages: int, sentence: str) -> bytes:
    buf = io.BytesIO()
    c = canvas.Canvas(buf, pagesize=A4)
    c.setTitle("Rainfall report")
    for i in range(pages):
        c.drawString(72, 760, f"Page {i + 1} of the rainfall report.")
        c.drawString(72, 740, sentence)
        c.showPage()
    c.save()
    return buf.getvalue()


JS_PAGE = f"""<!doctype html><html><head><title>Script page</title></head><body>
<div id="app"></div>
<script>
  const app = document.getElementById('app');
  const h = document.createElement('h1'); h.textContent = 'Built in the browser'; app.appendChild(h);
  const p = document.createElement('p'); p.textContent = {json.dumps(JS_SENTENCE)}; app.appendChild(p);
  fetch('/api/data').then(r => r.json()).then(d => {{
    const q = document.createElement('p'); q.textContent = d.sentence; app.appendChild(q);
  }});
</script></body></html>"""


def js_exfil_page(target: str) -> str:
    """A page whose script asks its own origin for a URL that redirects to ``target``."""
    return f"""<!doctype html><html><head><title>Exfil</title></head><body><div id="out">waiting</div>
<script>
  fetch('/redirect?to=' + encodeURIComponent({json.dumps(target)}))
    .then(r => r.text()).then(t => {{ document.getElementById('out').textContent = 'GOT ' + t; }})
    .catch(e => {{ document.getElementById('out').textContent = 'BLOCKED ' + e; }});
</script></body></html>"""


@dataclass
class Site:
    base: str
    host: str
    port: int
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base + path


def _huge(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html; charset=utf-8")
    handler.end_headers()
    chunk = ("<p>" + "huge page filler text " * 200 + "</p>\n").encode()
    handler.wfile.write(b"<html><body><h1>Huge</h1>")
    with _suppress_disconnect():
        for _ in range(8 * 1024 * 1024 // len(chunk)):  # ~8 MB, more than any cap
            handler.wfile.write(chunk)


def _slow_body(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/html")
    handler.end_headers()
    with _suppress_disconnect():
        for _ in range(100):
            handler.wfile.write(b"<p>drip</p>")
            handler.wfile.flush()
            time.sleep(0.2)


class _suppress_disconnect:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> bool:
        return exc_type is not None and issubclass(exc_type, (BrokenPipeError, ConnectionResetError))  # type: ignore[arg-type]


def build_routes(secret_base: str) -> dict[str, Callable[[dict[str, list[str]]], Reply]]:
    html = {"Content-Type": "text/html; charset=utf-8"}
    pdf = make_pdf(3, PDF_SENTENCE)
    big_pdf = make_pdf(60, PDF_SENTENCE)
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8
    zip_bytes = b"PK\x03\x04" + bytes(200)
    latin = (
        "<html><head><title>Café</title></head><body><h1>Crème brûlée à la française</h1>"
        "<p>Le café coûte 3 € — naïve façade, garçon! " + "Phrase française. " * 20 + "</p></body></html>"
    )
    sjis = (
        "<html><head><title>日本語</title></head><body><h1>東京の天気</h1><p>"
        + "今日は晴れです。明日は雨が降るでしょう。" * 10
        + "</p></body></html>"
    )
    return {
        "/": lambda q: (200, html, article_html("Home", ARTICLE_SENTENCE).encode()),
        "/article": lambda q: (200, html, article_html("Storm log", ARTICLE_SENTENCE).encode()),
        "/huge": lambda q: (200, {}, _huge),
        "/slow": _slow,
        "/slow-body": lambda q: (200, {}, _slow_body),
        "/loop-a": lambda q: (302, {"Location": "/loop-b"}, b""),
        "/loop-b": lambda q: (301, {"Location": "/loop-a"}, b""),
        "/chain": lambda q: _chain(int(q.get("n", ["0"])[0])),
        "/redirect": lambda q: (302, {"Location": q["to"][0]}, b""),
        "/missing": lambda q: (404, html, b"<h1>Not found</h1>"),
        "/broken": lambda q: (500, html, b"<h1>Server error</h1>"),
        "/latin1": lambda q: (200, {"Content-Type": "text/html; charset=ISO-8859-1"}, latin.encode("cp1252")),
        "/cp1252-meta": lambda q: (
            200,
            {"Content-Type": "text/html"},
            latin.replace(
                "<head>", '<head><meta http-equiv="Content-Type" content="text/html; charset=windows-1252">'
            ).encode("cp1252"),
        ),
        "/sjis": lambda q: (200, {"Content-Type": "text/html; charset=Shift_JIS"}, sjis.encode("shift_jis")),
        "/sjis-undeclared": lambda q: (200, {"Content-Type": "text/html"}, sjis.encode("shift_jis")),
        "/image.png": lambda q: (200, {"Content-Type": "image/png"}, png),
        "/archive.zip": lambda q: (200, {"Content-Type": "application/zip"}, zip_bytes),
        "/unlabelled-binary": lambda q: (200, {}, zip_bytes),
        "/report.pdf": lambda q: (200, {"Content-Type": "application/pdf"}, pdf),
        "/mislabelled-pdf": lambda q: (200, {"Content-Type": "text/html"}, pdf),
        "/long.pdf": lambda q: (200, {"Content-Type": "application/pdf"}, big_pdf),
        "/data.json": lambda q: (
            200,
            {"Content-Type": "application/json"},
            json.dumps({"sentence": XHR_SENTENCE, "n": 48}).encode(),
        ),
        "/notes.txt": lambda q: (
            200,
            {"Content-Type": "text/plain; charset=utf-8"},
            ("Plain notes.\n" + ARTICLE_SENTENCE + "\n").encode(),
        ),
        "/feed.xml": lambda q: (
            200,
            {"Content-Type": "application/rss+xml"},
            b"<?xml version='1.0'?><rss><channel><title>Feed</title></channel></rss>",
        ),
        "/api/data": lambda q: (
            200,
            {"Content-Type": "application/json"},
            json.dumps({"sentence": XHR_SENTENCE}).encode(),
        ),
        "/js": lambda q: (200, html, JS_PAGE.encode()),
        "/js-exfil": lambda q: (200, html, js_exfil_page(secret_base + "/secret").encode()),
        "/robots.txt": lambda q: (
            200,
            {"Content-Type": "text/plain"},
            b"User-agent: *\nDisallow: /private/\n",
        ),
        "/secret": lambda q: (200, {"Content-Type": "text/plain"}, SECRET.encode()),
        **browser_hostile_routes(),
    }


def _slow(q: dict[str, list[str]]) -> Reply:
    time.sleep(float(q.get("s", ["10"])[0]))  # longer than any deadline the tests use
    return 200, {"Content-Type": "text/html"}, b"<p>late</p>"


def _chain(n: int) -> Reply:
    if n <= 0:
        return 200, {"Content-Type": "text/html"}, article_html("End of chain", ARTICLE_SENTENCE).encode()
    return 302, {"Location": f"/chain?n={n - 1}"}, b""


def _serve(
    host: str,
    routes_for: Callable[[int], dict[str, Callable[[dict[str, list[str]]], Reply]]],
    port: int = 0,
) -> tuple[ThreadingHTTPServer, Site]:
    site_ref: list[Site] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            return None

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            route = routes.get(parts.path)
            site_ref[0].hits[parts.path] = site_ref[0].hits.get(parts.path, 0) + 1
            reply: Reply = (404, {"Content-Type": "text/plain"}, b"no such page")
            if route is not None:
                reply = route(parse_qs(parts.query))
            status, headers, body = reply
            if callable(body):
                self.close_connection = True
                body(self)
                return
            with _suppress_disconnect():
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]
    routes = routes_for(port)
    site_ref.append(Site(base=f"http://{host}:{port}", host=host, port=port))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, site_ref[0]


# --- pages that attack the browser path ------------------------------------------------------
# Each takes its target (an address the guard must keep the browser away from) as ``?to=``.

RANDOM_BYTES = random.Random(6).randbytes(147_000)
DOM_BOMB_CHARS = 12_000_000  # what the /dom-bomb script builds, far over any cap


def _to(q: dict[str, list[str]]) -> str:
    return q.get("to", [""])[0]


def popup_storm_page(target: str) -> str:
    """50 popups to ``target``, one popup left running a timer, and a timer in the page itself."""
    t = json.dumps(target)
    return f"""<!doctype html><html><head><title>Popups</title></head><body>
<p>{ARTICLE_SENTENCE}</p>
<script>
  for (let i = 0; i < 50; i++) window.open({t} + '/open-' + i, '_blank');
  const w = window.open('', 'keeper');
  const timer = 'setInterval(() => fetch(' + {json.dumps(t)} + ' + "/popup-tick", {{mode: "no-cors"}}), 50);';
  if (w) w.document.write('<script>' + timer + '<' + '/script>');
  setInterval(() => {{
    fetch({t} + '/page-tick', {{mode: 'no-cors'}}).catch(() => {{}});
    fetch('/tick').catch(() => {{}});
  }}, 50);
</script></body></html>"""


# One hostile construct per page: each made Chromium open a TCP connection to a blocked address
# (before our route handler could refuse the request) in the outside review.
def bait_page(kind: str, target: str) -> str:
    t = json.dumps(target)
    constructs = {
        "iframe": f"<iframe src='{target}/iframe'></iframe>",
        "object": f"<object data='{target}/object'></object>",
        "form": f"<form id='f' method='post' action='{target}/form'><input name='a' value='b'></form>"
        "<script>document.getElementById('f').submit()</script>",
        "location": f"<script>location.href = {t} + '/location'</script>",
        "meta-refresh": f"<meta http-equiv='refresh' content='0;url={target}/refresh'>",
        "download": f"<a id='d' href='{target}/download' download>file</a>"
        "<script>document.getElementById('d').click()</script>",
        "shared-worker": f"<script>try {{ new SharedWorker({t} + '/worker.js') }} catch (e) {{}}</script>",
        "preconnect": f"<link rel='preconnect' href='{target}'><link rel='dns-prefetch' href='{target}'>",
        "speculation": "<script type='speculationrules'>"
        + json.dumps({"prerender": [{"source": "list", "urls": [target + "/prerender"]}]})
        + "</script>",
        "popup": f"<script>window.open({t} + '/popup')</script>",
        # TURN over TCP and STUN over UDP, both at the target's host and port.
        "webrtc": "<script>try { const pc = new RTCPeerConnection({iceServers: [{urls: "
        + json.dumps(f"turn:{urlsplit(target).netloc}?transport=tcp")
        + ", username: 'u', credential: 'p'}, {urls: "
        + json.dumps(f"stun:{urlsplit(target).netloc}")
        + "}]}); pc.createDataChannel('x');"
        " pc.createOffer().then(o => pc.setLocalDescription(o)); } catch (e) {}</script>",
    }
    return (
        f"<!doctype html><html><head><title>Bait {kind}</title></head><body>"
        f"<p>{ARTICLE_SENTENCE}</p>{constructs[kind]}</body></html>"
    )


BAIT_KINDS = (
    "iframe",
    "object",
    "form",
    "location",
    "meta-refresh",
    "download",
    "shared-worker",
    "preconnect",
    "speculation",
    "popup",
    "webrtc",
)


def navigate_away_page(target: str) -> str:
    """Leaves for ``target`` while still parsing; the busy loop holds DOMContentLoaded back, so the
    navigation request reaches the browser before the page counts as loaded."""
    return f"""<!doctype html><html><head><title>Leaving</title>
<script>location.href = {json.dumps(target)};</script>
<script>const until = Date.now() + 300; while (Date.now() < until) {{}}</script>
</head><body><p>{ARTICLE_SENTENCE}</p></body></html>"""


TICKER_PAGE = f"""<!doctype html><html><head><title>Ticker</title></head><body><p>{ARTICLE_SENTENCE}</p>
<script>setInterval(() => {{ console.log('tick'); fetch('/tick').catch(() => {{}}); }}, 20);</script>
</body></html>"""

FETCH_HUGE_PAGE = f"""<!doctype html><html><head><title>Big fetch</title></head><body>
<p>{ARTICLE_SENTENCE}</p><p id="out">waiting</p>
<script>
  fetch('/huge').then(r => r.text())
    .then(t => {{ document.getElementById('out').textContent = 'GOT ' + t.length; }})
    .catch(e => {{ document.getElementById('out').textContent = 'REFUSED'; }});
</script></body></html>"""

DOM_BOMB_PAGE = f"""<!doctype html><html><head><title>DOM bomb</title></head><body><p>{ARTICLE_SENTENCE}</p>
<script>
  const p = document.createElement('p');
  p.textContent = 'ballast '.repeat({DOM_BOMB_CHARS // 8});
  document.body.appendChild(p);
</script></body></html>"""

# The snapshot must not trust the page's own builtins: these would hand back a huge string.
LIAR_PAGE = f"""<!doctype html><html><head><title>Liar</title></head><body><p>{ARTICLE_SENTENCE}</p>
<script>
  const big = 'lie '.repeat({DOM_BOMB_CHARS // 4});
  String.prototype.slice = function () {{ return big; }};
  String.prototype.substring = function () {{ return big; }};
  Object.defineProperty(Element.prototype, 'outerHTML', {{ get() {{ return big; }} }});
  Object.defineProperty(Document.prototype, 'documentElement', {{ get() {{ return document.body; }} }});
</script></body></html>"""


class StreamLog:
    """Bytes each streaming route managed to send before the client hung up."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._done: dict[str, threading.Event] = {}
        self._sent: dict[str, int] = {}

    def start(self, name: str) -> None:
        with self._lock:
            self._done[name] = threading.Event()
            self._sent[name] = 0

    def add(self, name: str, n: int) -> None:
        with self._lock:
            self._sent[name] += n

    def finish(self, name: str) -> None:
        with self._lock:
            self._done[name].set()

    def wait(self, name: str, timeout: float) -> int:
        """Bytes sent by the last stream called ``name``, once it has ended."""
        with self._lock:
            done = self._done[name]
        if not done.wait(timeout):
            raise TimeoutError(f"stream {name} still running after {timeout}s")
        with self._lock:
            return self._sent[name]


STREAMS = StreamLog()


def _fifty_megabytes(handler: BaseHTTPRequestHandler) -> None:
    STREAMS.start("huge50")
    try:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/html; charset=utf-8")
        handler.send_header("Content-Length", str(50 * 1024 * 1024))
        handler.end_headers()
        chunk = ("<p>" + "fifty megabytes of filler " * 2000 + "</p>\n").encode()
        sent = 0
        with _suppress_disconnect():
            while sent < 50 * 1024 * 1024:
                part = chunk[: 50 * 1024 * 1024 - sent]
                handler.wfile.write(part)
                sent += len(part)
                STREAMS.add("huge50", len(part))
    finally:
        STREAMS.finish("huge50")


def _gzip_bomb() -> bytes:
    """~256 MB of HTML once inflated, about 250 kB on the wire."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip framing
    parts = [packer.compress(b"<html><body><p>")]
    block = b"bomb " * (1024 * 1024 // 5)
    parts += [packer.compress(block) for _ in range(256)]
    parts.append(packer.compress(b"</p></body></html>") + packer.flush())
    return b"".join(parts)


_BOMB: list[bytes] = []


def _bomb_reply(q: dict[str, list[str]]) -> Reply:
    if not _BOMB:
        _BOMB.append(_gzip_bomb())
    return 200, {"Content-Type": "text/html", "Content-Encoding": "gzip"}, _BOMB[0]


def browser_hostile_routes() -> dict[str, Callable[[dict[str, list[str]]], Reply]]:
    html = {"Content-Type": "text/html; charset=utf-8"}
    return {
        "/popups": lambda q: (200, html, popup_storm_page(_to(q)).encode()),
        "/bait": lambda q: (200, html, bait_page(q["kind"][0], _to(q)).encode()),
        "/navigate-away": lambda q: (200, html, navigate_away_page(_to(q)).encode()),
        "/ticker": lambda q: (200, html, TICKER_PAGE.encode()),
        "/tick": lambda q: (200, {"Content-Type": "text/plain"}, b"tick"),
        "/huge50": lambda q: (200, {}, _fifty_megabytes),
        "/gzip-bomb": _bomb_reply,
        "/fetch-huge": lambda q: (200, html, FETCH_HUGE_PAGE.encode()),
        "/dom-bomb": lambda q: (200, html, DOM_BOMB_PAGE.encode()),
        "/liar": lambda q: (200, html, LIAR_PAGE.encode()),
        "/random-bytes": lambda q: (200, {"Content-Type": "text/html"}, RANDOM_BYTES),
    }

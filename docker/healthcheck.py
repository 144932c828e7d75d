"""The images' HEALTHCHECK: probes whatever Fathom process the container runs. No ``fathom`` probe
command exists, so this reads the container's own command line and asks the process itself.

    healthcheck.py                 # auto: the container's main process decides the probe
    healthcheck.py grpc HOST:PORT  # grpc.health.v1 Check == SERVING
    healthcheck.py http URL        # any HTTP answer below 500
    healthcheck.py worker          # the Celery worker of this container answers a ping

Auto-detection: ``fathom serve <grpc service>`` -> gRPC health at its ``--address``, else
FATHOM_PLANE__<SERVICE>_ADDRESS, else the service's default port (a 0.0.0.0 host is probed on
127.0.0.1); ``fathom serve web`` -> the local web's ``/healthz``; ``fathom worker`` -> its Prometheus
``/metrics`` when it serves one (``--metrics-port`` / FATHOM_PLANE__METRICS_PORT), else a Celery ping
to the worker's own node name; ``celery ... flower`` -> Flower's ``/healthcheck``; anything else
(one-shot CLI commands) is healthy while it runs. Exit status 0 healthy, 1 not.

Cheap on purpose: every container runs it every 30 s, so it imports only the standard library and
grpc (about 0.2 s of CPU), never the settings or the Fathom package, except for the Celery ping.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

# The defaults of fathom.core.config.PlaneSettings / WebSettings (kept in step by the deploy tests).
DEFAULT_PORTS = {"gateway": 50051, "policy": 50052, "synthesis": 50053, "reward": 50054, "tools": 50055,
                 "web": 8765}
INIT_NAMES = ("tini", "docker-init", "dumb-init")
TIMEOUT_S = 5.0


def _cmdline(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def main_process() -> tuple[int, list[str]]:
    """PID 1, or its first child when PID 1 is an init (tini) that runs the real command."""
    pid, argv = 1, _cmdline(1)
    while argv and Path(argv[0]).name in INIT_NAMES:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        if not children:
            break
        pid = int(children[0])
        argv = _cmdline(pid)
    return pid, argv


def _option(argv: list[str], *names: str) -> str | None:
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return None


def _loopback(address: str) -> str:
    host, port = address.rsplit(":", 1)
    return f"127.0.0.1:{port}" if host in ("0.0.0.0", "[::]", "::", "") else address


def grpc_ok(address: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(_loopback(address)) as channel:
        try:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT_S)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, OSError):
        return False


def worker_ok(pid: int, argv: list[str]) -> bool:
    """The worker's /metrics when it serves one; else ping exactly this container's worker (its node
    name built as ``fathom worker`` builds it)."""
    metrics = _option(argv, "--metrics-port") or os.environ.get("FATHOM_PLANE__METRICS_PORT")
    if metrics and metrics != "0":
        return http_ok(f"http://127.0.0.1:{metrics}/metrics")
    from fathom.cli.worker import node_name, parse_queues
    from fathom.queue.app import get_celery_app

    queues = parse_queues(_option(argv, "--queues", "-q") or "")
    node = node_name(queues, _option(argv, "--lane") or "both", pid)
    replies = get_celery_app().control.ping(destination=[node], timeout=TIMEOUT_S)
    return any(node in reply for reply in replies)


def auto() -> bool:
    pid, argv = main_process()
    if "flower" in argv:
        port = _option(argv, "--port") or os.environ.get("FLOWER_PORT", "5555")
        host = _option(argv, "--address") or "127.0.0.1"
        return http_ok(f"http://{_loopback(f'{host}:{port}')}/healthcheck")
    if "worker" in argv:
        return worker_ok(pid, argv)
    if "serve" in argv and argv.index("serve") + 1 < len(argv):
        service = argv[argv.index("serve") + 1]
        if service not in DEFAULT_PORTS:
            return True
        address = _option(argv, "--address")
        if service == "web":
            host = os.environ.get("FATHOM_WEB__HOST", "127.0.0.1")
            port = os.environ.get("FATHOM_WEB__PORT", str(DEFAULT_PORTS["web"]))
            return http_ok(f"http://{_loopback(address or f'{host}:{port}')}/healthz")
        configured = os.environ.get(f"FATHOM_PLANE__{service.upper()}_ADDRESS")
        return grpc_ok(address or configured or f"127.0.0.1:{DEFAULT_PORTS[service]}")
    return True


def main(args: list[str]) -> int:
    if not args:
        healthy = auto()
    elif args[0] == "grpc" and len(args) == 2:
        healthy = grpc_ok(args[1])
    elif args[0] == "http" and len(args) == 2:
        healthy = http_ok(args[1])
    elif args[0] == "worker" and len(args) == 1:
        healthy = worker_ok(*main_process())
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

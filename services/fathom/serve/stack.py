"""One machine, every process: a supervisor of the plane's OS processes (``fathom stack``).

The stack starts Redis (unless one already answers at the broker URL), migrates the store once, then
starts the local web, the gRPC services and one Celery worker pool per queue, each as a detached OS
process in its own session with its own environment (``FATHOM_*``), log file, pid file and metrics
port. Everything a later shell needs to find them again (``fathom stack status|down``) is written to
``<stack dir>/stack.json`` (mode 0600: it holds the stack's bearer token).

Why processes and not threads: the point of the stack is to run the same processes a deployment runs,
so that killing one (chaos tests) or restarting Redis exercises the real recovery paths.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from fathom.core.config import Settings
from fathom.core.errors import FathomError
from fathom.core.logging import get_logger

log = get_logger(__name__)

Kind = Literal["redis", "web", "grpc", "worker"]
STATE_FILE = "stack.json"
TOKEN_CLIENT = "stack"
GRPC_SERVICES = ("policy", "synthesis", "reward", "tools", "gateway")
WORKER_QUEUES = ("research", "search", "fetch", "synthesis", "reward")
LIVE_RESERVED = ("search", "fetch")  # tool queues with a live-only pool beside the shared one
# The replay model (fathom.models.replay): recorded completions at a fixed latency, no GPU needed.
# The extractor and synthesizer get the replay backend's fixed completion: no local model on CPU.
REPLAY_ENV = {
    "FATHOM_POLICY__BACKEND": "replay",
    "FATHOM_POLICY__MODEL": "bundled:replay-demo",
    "FATHOM_POLICY__LATENCY_S": "0.05",
    "FATHOM_EXTRACTOR__BACKEND": "replay",
    "FATHOM_EXTRACTOR__MODEL": "bundled:replay-demo",
    "FATHOM_EXTRACTOR__LATENCY_S": "0.01",
    "FATHOM_SYNTHESIZER__BACKEND": "replay",
    "FATHOM_SYNTHESIZER__MODEL": "bundled:replay-demo",
    "FATHOM_SYNTHESIZER__LATENCY_S": "0.01",
}
_WORKER_READY = re.compile(r"\bready\b")


class StackError(FathomError):
    """The stack could not be started, found or stopped."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def redis_pings(url: str, timeout: float = 1.0) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM when the bench dies, so that a bench killed before
    its cleanup leaves no Redis behind."""
    import ctypes

    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def private_redis(purpose: str = "a private Redis") -> Iterator[str]:
    """``redis-server`` on a free loopback port, no persistence, stopped on exit (and, on Linux, when
    the caller dies first): a bench's or a measurement's own Redis."""
    import tempfile

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(f"redis-server not found on PATH (needed for {purpose})")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    with tempfile.TemporaryDirectory(prefix="fathom-redis-") as tmp:
        proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", tmp],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                preexec_fn=_die_with_parent)
        try:
            deadline = time.monotonic() + 15
            while not redis_pings(url):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"redis-server did not start on port {port}")
                time.sleep(0.05)
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@dataclass
class ProcessSpec:
    """One supervised process: how to start it and how to tell it is ready."""

    name: str
    kind: Kind
    argv: list[str]
    env: dict[str, str]  # FATHOM_* overrides on top of the supervisor's environment
    port: int | None = None
    metrics_port: int | None = None
    tier: int = 1  # started after every process of a lower tier is ready


@dataclass
class ProcessStatus:
    name: str
    kind: str
    pid: int | None
    alive: bool
    ready: bool
    port: int | None
    metrics_port: int | None
    log: str


@dataclass
class StackSpec:
    """Everything needed to start (and find again) one stack."""

    directory: Path
    database_url: str
    broker_url: str
    redis_url: str
    token: str
    processes: list[ProcessSpec] = field(default_factory=list)
    own_redis: bool = False  # True: the stack starts (and stops) redis-server itself

    @property
    def gateway_address(self) -> str:
        return self.address_of("gateway")

    def address_of(self, name: str) -> str:
        proc = self.process(name)
        if proc.port is None:
            raise StackError(f"process {name!r} has no port")
        return f"127.0.0.1:{proc.port}"

    def process(self, name: str) -> ProcessSpec:
        for proc in self.processes:
            if proc.name == name:
                return proc
        raise StackError(f"no process named {name!r} in the stack (have: {', '.join(self.names)})")

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.processes]

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        directory: Path | None = None,
        postgres_url: str | None = None,
        replay_model: bool = False,
        free_ports: bool = False,
        own_redis: bool | None = None,
        broker_url: str | None = None,
        extra_env: dict[str, str] | None = None,
        workers: tuple[str, ...] = WORKER_QUEUES,
    ) -> StackSpec:
        """Build the spec. ``free_ports`` gives every server a free loopback port (tests, benches);
        otherwise the configured addresses are used. ``own_redis`` None: use the broker's Redis when it
        answers PING, else start one; True: always start one (chaos tests restart it)."""
        directory = (directory or settings.data_dir / "stack").resolve()
        database_url = postgres_url or settings.database_url or f"sqlite:///{directory / 'fathom.db'}"
        broker = broker_url or settings.plane.broker_url
        is_redis_broker = broker.startswith(("redis://", "rediss://"))
        redis_url = settings.plane.redis_url or (broker if is_redis_broker else "redis://127.0.0.1:6379/0")
        if own_redis is None:
            own_redis = not redis_pings(redis_url)
        if own_redis:
            port = free_port() if free_ports else (urlsplit(redis_url).port or 6379)
            redis_url = f"redis://127.0.0.1:{port}/0"
            if is_redis_broker:
                broker = redis_url
        token = _configured_token(settings) or secrets.token_urlsafe(24)
        spec = cls(directory, database_url, broker, redis_url, token, own_redis=own_redis)
        spec.processes = _process_specs(settings, spec, free_ports, replay_model, extra_env or {}, workers)
        return spec

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["directory"] = str(self.directory)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StackSpec:
        procs = [ProcessSpec(**p) for p in data.pop("processes")]
        spec = cls(**{**data, "directory": Path(data["directory"])})
        spec.processes = procs
        return spec


def _configured_token(settings: Settings) -> str | None:
    """The client token when one is configured and accepted by the configured token list."""
    if settings.plane.client_token is not None:
        return settings.plane.client_token.get_secret_value()
    return None


def _python_fathom(*args: str) -> list[str]:
    return [sys.executable, "-m", "fathom.cli.main", *args]


def _process_specs(
    settings: Settings, spec: StackSpec, free_ports: bool, replay_model: bool, extra_env: dict[str, str],
    workers: tuple[str, ...],
) -> list[ProcessSpec]:
    plane = settings.plane
    configured = {
        "gateway": plane.gateway_address, "policy": plane.policy_address,
        "synthesis": plane.synthesis_address, "reward": plane.reward_address, "tools": plane.tools_address,
    }
    ports = {name: free_port() if free_ports else _port_of(addr) for name, addr in configured.items()}
    web_port = free_port() if free_ports else settings.web.port
    common = {
        "FATHOM_DATABASE_URL": spec.database_url,
        "FATHOM_DATA_DIR": str(settings.data_dir),
        "FATHOM_CACHE_DIR": str(settings.cache_dir),
        "FATHOM_PLANE__BROKER_URL": spec.broker_url,
        "FATHOM_PLANE__REDIS_URL": spec.redis_url,
        "FATHOM_PLANE__AUTH_TOKENS": f"{TOKEN_CLIENT}:{spec.token}",
        "FATHOM_PLANE__CLIENT_TOKEN": spec.token,
        "FATHOM_WEB__HOST": "127.0.0.1",
        "FATHOM_WEB__PORT": str(web_port),
        "FATHOM_LOG_JSON": "true",
        **{f"FATHOM_PLANE__{name.upper()}_ADDRESS": f"127.0.0.1:{port}" for name, port in ports.items()},
        **(REPLAY_ENV if replay_model else {}),
        **extra_env,
    }
    if settings.plane.auth_tokens is not None:  # keep the operator's tokens, and accept the stack's own
        common["FATHOM_PLANE__AUTH_TOKENS"] += "," + settings.plane.auth_tokens.get_secret_value()

    def make(name: str, kind: Kind, argv: list[str], port: int | None, tier: int) -> ProcessSpec:
        metrics = free_port()
        env = {**common, "FATHOM_PLANE__METRICS_PORT": str(metrics)}
        return ProcessSpec(name, kind, argv, env, port, metrics, tier)

    procs: list[ProcessSpec] = []
    if spec.own_redis:
        rport = urlsplit(spec.redis_url).port or 6379
        argv = ["redis-server", "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                "no", "--dir", str(spec.directory / "redis"), "--daemonize", "no"]
        procs.append(ProcessSpec("redis", "redis", argv, {}, rport, None, 0))
    if settings.search.backend == "local":
        procs.append(make("web", "web", _python_fathom("serve", "web"), web_port, 1))
    for name in GRPC_SERVICES:
        procs.append(make(name, "grpc", _python_fathom("serve", name), ports[name], 1))
    for queue in workers:
        argv = _python_fathom("worker", "--queues", queue, "--lane", "both")
        procs.append(make(f"worker-{queue}", "worker", argv, None, 2))
    # The tool queues also get a pool that serves the live lane only: the shared pools above take
    # live work first and training with what is left, but a live call could still wait for one of
    # their slots to finish a long training fetch; this pool is never held by training.
    for queue in workers:
        if queue in LIVE_RESERVED:
            argv = _python_fathom("worker", "--queues", queue, "--lane", "live")
            procs.append(make(f"worker-{queue}-live", "worker", argv, None, 2))
    return procs


# -- process handling ------------------------------------------------------------------------------


def pid_alive(pid: int | None) -> bool:
    """True when the process exists and is not a zombie (works for processes of another shell)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _signal_group(pid: int, sig: int) -> None:
    """Every process of the group (a worker's pool children too): each runs in its own session."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def grpc_serving(address: str, timeout: float = 1.0) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as ch:
        try:
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def http_answers(port: int, timeout: float = 1.0) -> bool:
    """Any HTTP answer (even 404) from the local web on ``/healthz`` means it serves."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout):
            return True
    except urllib.error.HTTPError as exc:
        return exc.code < 500
    except (urllib.error.URLError, OSError):
        return False


class Stack:
    """Starts, watches and stops the processes of one ``StackSpec``; state lives in stack.json."""

    def __init__(self, spec: StackSpec) -> None:
        self.spec = spec
        self.pids: dict[str, int] = {}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._log_offset: dict[str, int] = {}  # where each log stood at the last start (worker readiness)

    # -- paths and state --
    @property
    def directory(self) -> Path:
        return self.spec.directory

    def log_path(self, name: str) -> Path:
        return self.directory / "logs" / f"{name}.log"

    def pid_path(self, name: str) -> Path:
        return self.directory / "pids" / f"{name}.pid"

    def save(self) -> None:
        path = self.directory / STATE_FILE
        tmp = path.with_suffix(".tmp")
        data = {"spec": self.spec.to_json(), "pids": self.pids}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        tmp.replace(path)

    @classmethod
    def load(cls, directory: Path) -> Stack:
        path = directory / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise StackError(f"no stack state at {path}: is a stack running there (fathom stack up)?") \
                from None
        except (OSError, json.JSONDecodeError) as exc:
            raise StackError(f"cannot read the stack state {path}: {exc}") from exc
        stack = cls(StackSpec.from_json(data["spec"]))
        stack.pids = {k: int(v) for k, v in data.get("pids", {}).items()}
        return stack

    # -- lifecycle --
    def up(self, timeout_s: float = 180.0) -> list[ProcessStatus]:
        """Start every process, tier by tier, each tier ready before the next starts."""
        for sub in ("logs", "pids", "redis"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self._check_free()
        deadline = time.monotonic() + timeout_s
        migrated = False
        try:
            for tier in sorted({p.tier for p in self.spec.processes}):
                if tier > 0 and not migrated:  # after Redis (tier 0), before any service opens the store
                    self.migrate()
                    migrated = True
                group = [p for p in self.spec.processes if p.tier == tier]
                for proc in group:
                    self.start(proc.name)
                self.save()
                self._wait_ready([p.name for p in group], deadline)
        except BaseException:
            self.down(grace_s=3.0)
            raise
        return self.status()

    def _check_free(self) -> None:
        busy = [p.name for p in self.spec.processes if p.port and _port_busy(p.port)]
        if busy:
            raise StackError(f"ports already in use for {', '.join(busy)}: is another stack running? "
                             f"(fathom stack status / down, or --dir for a second one)")

    def migrate(self) -> None:
        """Migrate the store once, before any service opens it (services then skip the race)."""
        from fathom.store.db import Database

        db = Database(self.spec.database_url)
        try:
            db.migrate()
        finally:
            db.dispose()

    def start(self, name: str) -> int:
        proc = self.spec.process(name)
        if proc.kind == "redis" and shutil.which(proc.argv[0]) is None:
            raise StackError("redis-server not found on PATH and no Redis answers at the broker URL")
        env = {**os.environ, **proc.env}
        logf = self.log_path(name).open("ab")
        self._log_offset[name] = logf.tell()
        try:
            popen = subprocess.Popen(
                proc.argv, env=env, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=self.directory, start_new_session=True,
            )
        finally:
            logf.close()
        self._procs[name] = popen
        self.pids[name] = popen.pid
        self.pid_path(name).write_text(f"{popen.pid}\n")
        log.info("stack_process_started", name=name, pid=popen.pid, port=proc.port,
                 log=str(self.log_path(name)))
        return popen.pid

    def alive(self, name: str) -> bool:
        popen = self._procs.get(name)
        if popen is not None:
            return popen.poll() is None
        return pid_alive(self.pids.get(name))

    def ready(self, name: str) -> bool:
        proc = self.spec.process(name)
        if not self.alive(name):
            return False
        if proc.kind == "redis":
            return redis_pings(self.spec.redis_url, timeout=0.5)
        if proc.kind == "web":
            return proc.port is not None and http_answers(proc.port)
        if proc.kind == "grpc":
            return grpc_serving(f"127.0.0.1:{proc.port}")
        return self._worker_ready(name)

    def _worker_ready(self, name: str) -> bool:
        """Celery logs ``celery@host ready.`` once it consumes; read the log since this start."""
        path = self.log_path(name)
        try:
            with path.open("rb") as f:
                f.seek(self._log_offset.get(name, 0))
                text = f.read().decode(errors="replace")
        except OSError:
            return False
        return bool(_WORKER_READY.search(text))

    def _wait_ready(self, names: list[str], deadline: float) -> None:
        pending = list(names)
        while pending:
            for name in list(pending):
                if not self.alive(name):
                    raise StackError(f"{name} exited during start-up; see {self.log_path(name)}:\n"
                                     f"{self.tail(name)}")
                if self.ready(name):
                    pending.remove(name)
            if pending and time.monotonic() > deadline:
                raise StackError(f"not ready in time: {', '.join(pending)}; "
                                 f"logs under {self.directory / 'logs'}")
            if pending:
                time.sleep(0.2)

    def wait_ready(self, name: str, timeout_s: float = 60.0) -> None:
        self._wait_ready([name], time.monotonic() + timeout_s)

    def tail(self, name: str, lines: int = 30) -> str:
        try:
            text = self.log_path(name).read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def status(self) -> list[ProcessStatus]:
        out = []
        for proc in self.spec.processes:
            alive = self.alive(proc.name)
            out.append(ProcessStatus(
                proc.name, proc.kind, self.pids.get(proc.name), alive, alive and self.ready(proc.name),
                proc.port, proc.metrics_port, str(self.log_path(proc.name)),
            ))
        return out

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Signal one process and its children (chaos: SIGKILL, no chance to clean up)."""
        pid = self.pids.get(name)
        if pid is None:
            raise StackError(f"{name} was never started")
        _signal_group(pid, sig)
        self._reap(name, timeout=10.0)

    def restart(self, name: str, *, wait: bool = True, timeout_s: float = 60.0) -> int:
        if self.alive(name):
            self.stop(name)
        pid = self.start(name)
        self.save()
        if wait:
            self.wait_ready(name, timeout_s)
        return pid

    def stop(self, name: str, grace_s: float = 10.0) -> None:
        pid = self.pids.get(name)
        if pid is None or not self.alive(name):
            return
        _signal_group(pid, signal.SIGTERM)
        if not self._reap(name, timeout=grace_s):
            log.warning("stack_process_killed", name=name, pid=pid, grace_s=grace_s)
            _signal_group(pid, signal.SIGKILL)
            self._reap(name, timeout=10.0)

    def _reap(self, name: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive(name):
                return True
            time.sleep(0.05)
        return not self.alive(name)

    def down(self, grace_s: float = 10.0) -> None:
        """SIGTERM every process (workers first, Redis last), wait ``grace_s``, SIGKILL what is left."""
        order = sorted(self.spec.processes, key=lambda p: -p.tier)
        for proc in order:
            pid = self.pids.get(proc.name)
            if pid is not None and self.alive(proc.name):
                _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in order:
            if not self._reap(proc.name, timeout=max(0.0, deadline - time.monotonic())):
                pid = self.pids[proc.name]
                log.warning("stack_process_killed", name=proc.name, pid=pid, grace_s=grace_s)
                _signal_group(pid, signal.SIGKILL)
                self._reap(proc.name, timeout=10.0)
        for proc in self.spec.processes:
            with contextlib.suppress(FileNotFoundError):
                self.pid_path(proc.name).unlink()
        with contextlib.suppress(FileNotFoundError):
            (self.directory / STATE_FILE).unlink()

    def client_settings(self, settings: Settings) -> Settings:
        """A copy of ``settings`` that reaches this stack: its addresses, store, broker and token."""
        from pydantic import SecretStr

        s = settings.model_copy(deep=True)
        env = self.spec.processes[-1].env
        s.database_url = self.spec.database_url
        s.plane.broker_url = self.spec.broker_url
        s.plane.redis_url = self.spec.redis_url
        s.plane.client_token = SecretStr(self.spec.token)
        for name in GRPC_SERVICES:
            key = f"FATHOM_PLANE__{name.upper()}_ADDRESS"
            if key in env:
                setattr(s.plane, f"{name}_address", env[key])
        if "FATHOM_WEB__PORT" in env:
            s.web.port = int(env["FATHOM_WEB__PORT"])
        return s


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


def default_stack_dir(settings: Settings) -> Path:
    return settings.data_dir / "stack"


def running_stack_settings(settings: Settings, directory: Path | None = None) -> Settings:
    """Settings for a client command: those of the stack running in ``directory`` (default stack dir)
    when there is one and the environment does not name a gateway token itself; else ``settings``."""
    directory = directory or default_stack_dir(settings)
    if settings.plane.client_token is not None or not (directory / STATE_FILE).exists():
        return settings
    try:
        return Stack.load(directory).client_settings(settings)
    except StackError:
        return settings


__all__ = [
    "REPLAY_ENV", "ProcessSpec", "ProcessStatus", "Stack", "StackError", "StackSpec", "default_stack_dir",
    "free_port", "grpc_serving", "pid_alive", "redis_pings", "running_stack_settings",
]

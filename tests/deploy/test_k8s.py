"""The Kubernetes manifests (k8s/): every overlay renders with `kubectl kustomize`, every object is
valid against the Kubernetes schemas and the vendored KEDA / Prometheus Operator CRD schemas,
checkov passes with each skipped check explained, every container command is a real `fathom`
command line, every FATHOM_* key is a real setting, and the deployment's own promises hold on the
rendered objects: lanes and queue lists match Celery's (checked against a real Redis), probes name
the services the servers register, security contexts, network isolation, the migration ordering.

The tools come from `make deploy-tools` (.venv/deploy; its own venv: checkov's pins clash with the
project's). Offline: nothing here downloads anything.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from fathom.core.config import PlaneSettings, Settings

from tests.deploy.settings_keys import setting_exists, settings_from

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
TOOLS = ROOT / ".venv" / "deploy" / "bin"
SCHEMA_SCRIPT = Path(__file__).resolve().parent / "k8s_schemas.py"
# Every kustomization a user applies: the two overlays and the separately applied training Job.
OVERLAYS = ("dev", "prod", "prod/training")
# Validated against the oldest Kubernetes minor these manifests promise (native gRPC probes are GA
# from 1.27; 1.30 is the oldest still commonly supported) and the newest schemas shipped.
KUBERNETES_VERSIONS = ("1.30", "1.37")
FATHOM_IMAGES = ("fathom/app", "fathom/fetch-worker", "fathom/trainer")

# Checks skipped for every object, each for a reason (any other skip is an inline
# `checkov.io/skip<N>: CHECK=reason` annotation on the object itself, e.g. CKV_K8S_15 in dev).
CHECKOV_SKIPS = {
    "CKV_K8S_43": "Image should use digest: images are pinned by tag per release in each overlay's "
                  "`images:` (prod: set `digest:` there once pushed); the dev overlay runs images built "
                  "on the machine, which have no registry digest",
    "CKV_K8S_35": "Prefer secrets as files: Fathom reads every setting from FATHOM_* environment "
                  "variables (pydantic-settings); the store and broker URLs have no file-based source. "
                  "Only Fathom's own containers get them, as secretKeyRefs, and Settings never logs "
                  "SecretStr values",
}


def _tool(name: str) -> Path:
    path = TOOLS / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make deploy-tools` (make setup does it)")
    return path


@dataclass
class Rendered:
    name: str
    path: Path
    docs: list[dict[str, Any]]
    applied_onto: Rendered | None = None  # the kustomization whose objects this one uses (training: prod)

    def of_kind(self, *kinds: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d["kind"] in kinds]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        for d in self.docs:
            if d["kind"] == kind and d["metadata"]["name"] == name:
                return d
        if self.applied_onto is not None:
            return self.applied_onto.get(kind, name)
        raise AssertionError(f"{self.name}: no {kind}/{name}")

    def named(self, kind: str) -> dict[str, dict[str, Any]]:
        return {d["metadata"]["name"]: d for d in self.of_kind(kind)}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    kubectl = _tool("kubectl")
    out_dir = tmp_path_factory.mktemp("k8s-rendered")
    result: dict[str, Rendered] = {}
    for overlay in OVERLAYS:
        proc = subprocess.run([str(kubectl), "kustomize", str(K8S / "overlays" / overlay)],
                              capture_output=True, text=True, timeout=120, check=False)
        assert proc.returncode == 0, f"kubectl kustomize {overlay} failed:\n{proc.stderr}"
        path = out_dir / f"{overlay.replace('/', '-')}.yaml"
        path.write_text(proc.stdout)
        result[overlay] = Rendered(overlay, path, [d for d in yaml.safe_load_all(proc.stdout) if d])
    result["prod/training"].applied_onto = result["prod"]
    return result


# -- helpers over rendered objects ---------------------------------------------------------------------

WORKLOADS = ("Deployment", "StatefulSet", "Job")


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj["spec"]["template"]["spec"]  # type: ignore[no-any-return]


def containers(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(obj)
    return [*spec.get("initContainers", []), *spec["containers"]]


def image_name(image: str) -> str:
    """`registry.example.com/fathom/app:0.1.0` -> `fathom/app` (and digests dropped)."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" in last:
        name = name[: -(len(last) - last.index(":"))]
    parts = name.split("/")
    if len(parts) > 2 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        parts = parts[1:]
    return "/".join(parts)


def is_fathom(container: dict[str, Any]) -> bool:
    return image_name(container["image"]) in FATHOM_IMAGES


def fathom_containers(r: Rendered) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for obj in r.of_kind(*WORKLOADS):
        for c in containers(obj):
            if is_fathom(c):
                yield obj, c


def labels_match(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions) against a label set."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj["spec"]["template"]["metadata"].get("labels", {})  # type: ignore[no-any-return]


def cli_argv(container: dict[str, Any]) -> list[str]:
    """The `fathom` command line a container runs: its args under the image's `fathom` entrypoint,
    or under `accelerate launch ... -m fathom.cli.main` (the trainer)."""
    command = container.get("command")
    args = [str(a) for a in container.get("args", [])]
    if command is None:
        return args
    command = [str(c) for c in command]
    assert command[:2] == ["accelerate", "launch"] and command[-2:] == ["-m", "fathom.cli.main"], (
        f"container {container['name']}: command {command} is neither the image's fathom entrypoint "
        "nor accelerate launch of fathom.cli.main")
    return args


# -- rendering and schemas ------------------------------------------------------------------------------


def test_overlays_render_the_whole_plane(rendered: dict[str, Rendered]) -> None:
    from fathom.queue.names import LANES, QUEUES
    from fathom.serve.stack import GRPC_SERVICES, WORKER_QUEUES

    assert set(WORKER_QUEUES) == set(QUEUES)
    for overlay in ("dev", "prod"):
        r = rendered[overlay]
        deployments = set(r.named("Deployment"))
        # Every process `fathom stack up` runs is a Deployment: each gRPC service, a pool per queue
        # and lane (the train lane on its own, to scale to zero), and the local web in dev.
        expected = {f"fathom-{s}" for s in GRPC_SERVICES}
        expected |= {f"fathom-worker-{q}-{lane}" for q in QUEUES for lane in LANES}
        if overlay == "dev":
            expected.add("fathom-web")
        assert expected <= deployments, expected - deployments
        for name in (f"fathom-{s}" for s in GRPC_SERVICES):
            assert name in r.named("Service"), name
        assert r.get("Job", "fathom-migrate")
        assert {d["metadata"].get("namespace") for d in r.docs if d["kind"] != "Namespace"} == {"fathom"}
    dev, prod = rendered["dev"], rendered["prod"]
    assert set(dev.named("StatefulSet")) == {"fathom-redis", "fathom-postgres"}
    assert not prod.of_kind("StatefulSet") and not prod.of_kind("Secret")  # external, by Secret
    assert {"vllm-policy", "vllm-synthesizer"} <= set(prod.named("Deployment"))
    assert rendered["prod/training"].get("Job", "fathom-rapo-train")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_is_valid_against_its_schema(rendered: dict[str, Rendered], version: str) -> None:
    python = _tool("python")
    files = [str(r.path) for r in rendered.values()]
    proc = subprocess.run([str(python), str(SCHEMA_SCRIPT), "--kubernetes-version", version, *files],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["errors"] == []
    total = sum(len(r.docs) for r in rendered.values())
    crds = sum(1 for r in rendered.values() for d in r.docs
               if d["kind"] in ("ScaledObject", "ServiceMonitor"))
    assert report["objects"] == total and report["crd"] == crds and crds >= 21
    assert report["kubernetes"] + report["crd"] == total


def test_checkov_passes_with_explained_skips(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    checkov = _tool("checkov")
    for r in rendered.values():
        (tmp_path / r.path.name).write_text(r.path.read_text())
    proc = subprocess.run(
        [str(checkov), "--directory", str(tmp_path), "--framework", "kubernetes", "--skip-download",
         "--quiet", "--compact", "--output", "json", "--skip-check", ",".join(CHECKOV_SKIPS)],
        capture_output=True, text=True, timeout=600, check=False, env={**os.environ, "LOG_LEVEL": "ERROR"})
    assert proc.stdout.strip(), proc.stderr[-3000:]
    reports = json.loads(proc.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [f"{f['check_id']} {f['resource']} ({f['file_path']}): {f['check_name']}"
              for rep in reports for f in rep["results"]["failed_checks"]]
    assert failed == []
    summary = reports[0]["summary"]
    assert summary["passed"] > 1000 and summary["parsing_errors"] == 0
    # Every inline skip (`checkov.io/skip<N>: CHECK_ID=reason`) names a check and gives a reason.
    for r in rendered.values():
        for d in r.docs:
            for key, value in d["metadata"].get("annotations", {}).items():
                if key.startswith("checkov.io/skip"):
                    check, _, reason = value.partition("=")
                    assert re.fullmatch(r"CKV_K8S_\d+", check), (d["metadata"]["name"], value)
                    assert len(reason) > 20, (d["metadata"]["name"], value)


# -- commands and settings -------------------------------------------------------------------------------


def _parse_fathom(argv: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Parse a `fathom` command line with the real CLI's parser (Typer/Click): the command path and
    its parameters; a usage error (unknown command or option, bad value, missing option) raises."""
    import typer
    from fathom.cli.main import app

    root = typer.main.get_command(app)
    ctx = root.make_context("fathom", list(argv))
    command: Any = root
    path: list[str] = []
    while hasattr(command, "resolve_command"):
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        name, command, rest = command.resolve_command(ctx, rest)
        path.append(name)
        ctx = command.make_context(name, rest, parent=ctx)
    return path, dict(ctx.params)


def _mounted_files(obj: dict[str, Any], container: dict[str, Any], r: Rendered, into: Path) -> dict[str, str]:
    """ConfigMap volumes the container mounts, written under `into`: {mount path: local path}."""
    volumes = {v["name"]: v for v in pod_spec(obj).get("volumes", [])}
    found: dict[str, str] = {}
    for mount in container.get("volumeMounts", []):
        cm = volumes[mount["name"]].get("configMap")
        if cm is None:
            continue
        local = into / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        for key, text in r.get("ConfigMap", cm["name"])["data"].items():
            (local / key).write_text(text)
        found[mount["mountPath"].rstrip("/")] = str(local)
    return found


def test_every_container_runs_a_real_fathom_command(rendered: dict[str, Rendered], tmp_path: Path) -> None:
    from fathom.cli.worker import parse_queues
    from fathom.queue.names import LANE_CHOICES
    from fathom.rpc.server import check_address

    seen: set[tuple[str, ...]] = set()
    for r in rendered.values():
        for obj, c in fathom_containers(r):
            if c["name"] == "seed-cache":  # dev: copies the image's prepared cache (not a fathom command)
                assert c["command"] == ["cp", "-a", "/var/cache/fathom/.", "/seed/"]
                continue
            argv = cli_argv(c)
            mounts = _mounted_files(obj, c, r, tmp_path / r.name.replace("/", "-") / obj["metadata"]["name"])
            for i, arg in enumerate(argv):  # a file from a mounted ConfigMap, as the pod would see it
                for mount, local in mounts.items():
                    if arg.startswith(mount + "/"):
                        argv[i] = local + arg[len(mount):]
            path, params = _parse_fathom(argv)
            seen.add(tuple(path))
            if path == ["worker"]:  # checked in the command body, not by the parser
                assert parse_queues(params["queues"]) == [params["queues"]]
                assert params["lane"] in LANE_CHOICES
            if path[0] == "serve" and params.get("address"):
                _, port = check_address(params["address"])
                declared = {p["containerPort"] for p in c.get("ports", [])}
                assert port in declared, f"{obj['metadata']['name']} listens on {port}, declares {declared}"
    assert {("serve", s) for s in ("gateway", "policy", "synthesis", "reward", "tools", "web")} <= seen
    assert ("worker",) in seen and ("train", "rapo") in seen


def test_setting_exists_reads_the_settings_tree() -> None:
    assert setting_exists("FATHOM_POLICY__BASE_URL") and setting_exists("FATHOM_DATABASE_URL")
    assert setting_exists("FATHOM_PLANE__METRICS_PORT") and setting_exists("FATHOM_SERPER_API_KEY")
    assert not setting_exists("FATHOM_POLICY__BASEURL") and not setting_exists("FATHOM_PLANE")
    assert not setting_exists("FATHOM_LOG_JSON__X") and not setting_exists("POLICY__MODEL")


@dataclass
class ContainerEnv:
    values: dict[str, str] = field(default_factory=dict)  # known values (ConfigMaps, literals, dev Secret)
    from_secret: set[str] = field(default_factory=set)  # keys whose value is a Secret's (prod: external)


def container_env(r: Rendered, container: dict[str, Any]) -> ContainerEnv:
    env = ContainerEnv()
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref is not None, f"{container['name']}: envFrom only from ConfigMaps ({source})"
        env.values.update(r.get("ConfigMap", ref["name"])["data"])
    secrets = {**(r.applied_onto.named("Secret") if r.applied_onto else {}), **r.named("Secret")}
    for item in container.get("env", []):
        if "value" in item:
            env.values[item["name"]] = str(item["value"])
            continue
        ref = item["valueFrom"].get("secretKeyRef") or item["valueFrom"]["configMapKeyRef"]
        if "secretKeyRef" in item["valueFrom"]:
            env.from_secret.add(item["name"])
            secret = secrets.get(ref["name"])
            if secret is not None and ref["key"] in secret.get("data", {}):
                env.values[item["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
            elif secret is not None:
                assert ref.get("optional"), f"{item['name']}: key {ref['key']} not in Secret {ref['name']}"
        else:
            env.values[item["name"]] = r.get("ConfigMap", ref["name"])["data"][ref["key"]]
    return env


def test_every_fathom_env_key_is_a_real_setting_with_a_valid_value(
    rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    checked = 0
    for r in rendered.values():
        for obj, c in fathom_containers(r):
            env = container_env(r, c)
            keys = set(env.values) | env.from_secret
            unknown = sorted(k for k in keys if k.startswith("FATHOM_") and not setting_exists(k))
            assert unknown == [], f"{r.name} {obj['metadata']['name']}: not settings: {unknown}"
            assert {k for k in keys if not k.startswith("FATHOM_")} <= {"REDIS_ADDRESS", "REDIS_PASSWORD"}
            settings_from(env.values, monkeypatch)  # every known value parses (types, literals)
            checked += 1
    assert checked > 40


def test_configmaps_drive_the_settings_each_overlay_promises(
    rendered: dict[str, Rendered], monkeypatch: pytest.MonkeyPatch
) -> None:
    from fathom.core.config import BUNDLED_MODEL

    prod = rendered["prod"]
    policy = pod_spec(prod.get("Deployment", "fathom-policy"))["containers"][0]
    s = settings_from(container_env(prod, policy).values, monkeypatch)
    assert (s.policy.backend, s.policy.model, s.policy.context_tokens) == (
        "openai", "FractalAIResearch/Fathom-Search-4B", 40_960)
    assert s.policy.base_url == "http://vllm-policy:8000/v1" and s.policy.api == "completions"
    assert s.synthesizer.model == "FractalAIResearch/Fathom-Synthesizer-4B"
    assert s.synthesizer.context_tokens == 131_072
    assert s.synthesizer.base_url == "http://vllm-synthesizer:8000/v1" and s.synthesizer.temperature == 0.4
    assert s.search.backend == "serper" and s.plane.gateway_address == "fathom-gateway:50051"
    assert s.plane.metrics_port == 9100 and str(s.cache_dir) == "/var/cache/fathom"
    # No secret travels in a ConfigMap.
    for r in rendered.values():
        for cm in r.of_kind("ConfigMap"):
            for key in cm.get("data", {}):
                secret = re.search(r"(_KEY|PASSWORD|_TOKENS?|DATABASE_URL|_REDIS_URL|BROKER_URL|INDEX_URL)$",
                                   key)
                assert not secret or key.endswith(("CONTEXT_TOKENS", "NEW_TOKENS")), key

    dev = rendered["dev"]
    web = dev.get("Deployment", "fathom-web")
    for name in ("fathom-policy", "fathom-worker-fetch-live"):
        env = container_env(dev, pod_spec(dev.get("Deployment", name))["containers"][-1]).values
        s = settings_from(env, monkeypatch)
        assert s.policy.backend == "transformers" and s.policy.model == BUNDLED_MODEL
        assert s.search.backend == "local"
        # The local web's origin is its Service, on the port the web pod serves.
        assert s.web.origin == "http://fathom-web:8765"
        assert {p["port"] for p in dev.get("Service", "fathom-web")["spec"]["ports"]} >= {s.web.port}
        assert pod_spec(web)["containers"][0]["args"][-1].endswith(f":{s.web.port}")
        # The dev Secret's URLs point at the in-cluster stores' Services.
        assert s.database_url is not None and "@fathom-postgres:5432/" in s.database_url
        assert s.plane.broker_url.startswith("redis://") and "@fathom-redis:6379/" in s.plane.broker_url


# -- model servers, training ----------------------------------------------------------------------------

# Qwen3-4B's config.json declares 40,960 positions (its docs call 32,768 native); both Fathom models are
# Qwen3-4B fine-tunes, so a window past 40,960 is served only through rope scaling.
QWEN3_4B_CONFIG_POSITIONS = 40_960


def _flag(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _rope_scaling(args: list[str]) -> dict[str, Any] | None:
    if (given := _flag(args, "--rope-scaling")) is not None:
        return dict(json.loads(given))
    overrides = json.loads(_flag(args, "--hf-overrides") or "{}")
    scaling = overrides.get("rope_scaling") or overrides.get("rope_parameters")
    return dict(scaling) if scaling else None


def test_vllm_servers_cover_their_context_windows(rendered: dict[str, Rendered]) -> None:
    prod = rendered["prod"]
    servers = {name: [str(a) for a in pod_spec(d)["containers"][0]["args"]]
               for name, d in prod.named("Deployment").items()
               if "vllm" in pod_spec(d)["containers"][0]["image"]}
    assert set(servers) == {"vllm-policy", "vllm-synthesizer"}
    assert _flag(servers["vllm-policy"], "--model") == "FractalAIResearch/Fathom-Search-4B"
    assert _flag(servers["vllm-policy"], "--max-model-len") == "40960"
    assert _flag(servers["vllm-synthesizer"], "--model") == "FractalAIResearch/Fathom-Synthesizer-4B"
    assert _flag(servers["vllm-synthesizer"], "--max-model-len") == "131072"
    for name, args in servers.items():
        window = int(_flag(args, "--max-model-len") or 0)
        rope = _rope_scaling(args)
        if rope is None:
            assert window <= QWEN3_4B_CONFIG_POSITIONS, f"{name}: {window} tokens need rope scaling"
            continue
        assert rope["rope_type"] == "yarn", name
        covered = float(rope["factor"]) * int(rope["original_max_position_embeddings"])
        assert covered >= window, f"{name}: YaRN covers {covered:.0f} tokens, the window is {window}"
    # Qwen3's own long-context recipe for the synthesizer.
    assert _rope_scaling(servers["vllm-synthesizer"]) == {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    for name in servers:
        c = pod_spec(prod.get("Deployment", name))["containers"][0]
        assert c["resources"]["limits"]["nvidia.com/gpu"] == 1 and c["startupProbe"]["failureThreshold"] >= 60


def test_training_job_trains_through_the_clusters_policy_service(
    rendered: dict[str, Rendered], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fathom.training.agent_rollouts import rollout_settings
    from fathom.training.config import load_config

    r = rendered["prod/training"]
    job = r.get("Job", "fathom-rapo-train")
    c = pod_spec(job)["containers"][0]
    assert image_name(c["image"]) == "fathom/trainer" and c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert cli_argv(c)[:2] == ["train", "rapo"]
    config_file = tmp_path / "rapo.yaml"
    config_file.write_text(r.get("ConfigMap", "fathom-rapo-config")["data"]["rapo.yaml"])
    cfg = load_config(config_file)  # the real schema: an unknown key is an error
    assert cfg.device == "cuda" and cfg.rollout.kind == "agent"
    assert (cfg.rapo.group_size, cfg.rapo.batch_prompts, cfg.rollout.max_context_tokens) == (5, 32, 40_960)
    # The trainer's settings as `fathom train rapo` builds them in that pod (env, then the run's own).
    env = container_env(r, c).values
    with monkeypatch.context() as m:
        for key, value in env.items():
            m.setenv(key, value)
        settings = rollout_settings(cfg, Settings.model_validate(cfg.settings))
    assert settings.judge.base_url == "http://vllm-policy:8000/v1"
    # Rollouts: a policy service in the cluster (its tools on the train-lane queues), fed the
    # trainer's weights through the volume both mount as the weights directory.
    assert cfg.rollout.policy == "grpc" and cfg.rollout.policy_address and cfg.rollout.weights_dir
    host, port = cfg.rollout.policy_address.split(":")
    service = r.get("Service", host)
    assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    (server,) = [d for d in r.of_kind("Deployment")
                 if labels_match({"matchLabels": service["spec"]["selector"]}, pod_labels(d))]
    sc = pod_spec(server)["containers"][0]
    path, params = _parse_fathom(cli_argv(sc))
    assert path == ["serve", "policy"] and params["address"].endswith(f":{port}")
    served = settings_from(container_env(r, sc).values, monkeypatch)
    assert served.policy.backend == "transformers" and served.policy.device == "cuda"  # takes weights
    assert served.plane.weights_dir == cfg.rollout.weights_dir
    assert sc["resources"]["limits"]["nvidia.com/gpu"] == 1

    def weights_claim(obj: dict[str, Any], container: dict[str, Any]) -> str:
        volumes = {v["name"]: v for v in pod_spec(obj)["volumes"]}
        (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(cfg.rollout.weights_dir)]
        return str(volumes[mount["name"]]["persistentVolumeClaim"]["claimName"])

    assert weights_claim(job, c) == weights_claim(server, sc)
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert {"/etc/fathom/rapo", "/var/lib/fathom/runs", "/var/lib/fathom/train-data", "/dev/shm"} <= mounts
    assert str(cfg.output_dir).startswith("/var/lib/fathom/runs/")
    assert all(src.startswith("/var/lib/fathom/train-data/") for src in cfg.data.sources)
    # The train-lane pools that serve those tool calls exist in prod and scale from zero.
    for queue in ("search", "fetch"):
        scaled = rendered["prod"].get("ScaledObject", f"fathom-worker-{queue}-train")
        assert scaled["spec"]["minReplicaCount"] == 0


# -- autoscaling ---------------------------------------------------------------------------------------


def test_keda_scales_each_pool_on_its_own_celery_list(
    rendered: dict[str, Rendered], spawn_redis: Callable[[], Any]
) -> None:
    import redis
    from fathom.queue.app import TASK_QUEUES, make_celery
    from fathom.queue.names import queue_name

    for overlay in ("dev", "prod"):
        r = rendered[overlay]
        scaled = r.named("ScaledObject")
        workers = {n: d for n, d in r.named("Deployment").items()
                   if pod_labels(d).get("app.kubernetes.io/component") == "worker"}
        assert set(scaled) == set(workers)
        for name, so in scaled.items():
            target = workers[so["spec"]["scaleTargetRef"]["name"]]
            _, params = _parse_fathom(cli_argv(pod_spec(target)["containers"][-1]))
            (trigger,) = so["spec"]["triggers"]
            assert trigger["type"] == "redis"
            assert trigger["metadata"]["listName"] == queue_name(params["queues"], params["lane"])
            minimum = so["spec"].get("minReplicaCount", 0)
            assert (minimum == 0) == (params["lane"] == "train"), f"{name}: min {minimum}"
            assert so["spec"]["maxReplicaCount"] >= 2
            # KEDA reads the address and password from the target's env: they must be there.
            env_names = {e["name"] for e in pod_spec(target)["containers"][-1].get("env", [])}
            for key in ("addressFromEnv", "passwordFromEnv"):
                assert trigger["metadata"][key] in env_names
            assert "replicas" not in target["spec"], f"{name}: replicas would fight KEDA on every apply"

    # The list KEDA watches is where Celery really puts a message for that queue and lane.
    server = spawn_redis()
    url = f"{server.url}/0"
    app = make_celery(Settings(plane=PlaneSettings(broker_url=url, redis_url=url)))
    client = redis.Redis.from_url(url)
    try:
        task_of = {q: t for t, q in TASK_QUEUES.items()}
        for so in rendered["prod"].of_kind("ScaledObject"):
            list_name = so["spec"]["triggers"][0]["metadata"]["listName"]
            queue = list_name.split(".")[0]
            before = client.llen(list_name)
            app.send_task(task_of[queue], kwargs={}, queue=list_name, routing_key=list_name)
            assert client.llen(list_name) == before + 1, list_name
    finally:
        client.close()
        app.close()


def test_grpc_services_have_hpas_pdbs_and_probes_on_registered_health_names(
    rendered: dict[str, Rendered],
) -> None:
    import importlib

    for overlay in ("dev", "prod"):
        r = rendered[overlay]
        hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in r.of_kind("HorizontalPodAutoscaler")}
        pdbs = r.of_kind("PodDisruptionBudget")
        for name, d in r.named("Deployment").items():
            labels = pod_labels(d)
            assert [p for p in pdbs if labels_match(p["spec"]["selector"], labels)], f"{name}: no PDB"
            if labels.get("app.kubernetes.io/component") != "grpc":
                continue
            assert name in hpas and "replicas" not in d["spec"], name
            service = name.removeprefix("fathom-")
            module = importlib.import_module(
                f"fathom.rpc.servicers.{'research' if service == 'gateway' else service}")
            c = pod_spec(d)["containers"][0]
            port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                assert c[probe]["grpc"]["port"] == port, (name, probe)
            # Startup and readiness ask for the very name the server registers as SERVING.
            assert c["startupProbe"]["grpc"]["service"] == module.SERVICE_NAME
            assert c["readinessProbe"]["grpc"]["service"] == module.SERVICE_NAME
            # Drain (FATHOM_PLANE__GRACE_S) fits in the grace period.
            grace = float(container_env(r, c).values["FATHOM_PLANE__GRACE_S"])
            assert pod_spec(d)["terminationGracePeriodSeconds"] > grace


def test_live_model_loading_gets_a_startup_probe(rendered: dict[str, Rendered]) -> None:
    dev = rendered["dev"]
    for name in ("fathom-policy", "fathom-synthesis", "fathom-reward"):
        probe = pod_spec(dev.get("Deployment", name))["containers"][0]["startupProbe"]
        assert probe["periodSeconds"] * probe["failureThreshold"] >= 300, name  # model load on CPU


# -- security, resources, network ----------------------------------------------------------------------


def test_every_pod_is_locked_down_and_sized(rendered: dict[str, Rendered]) -> None:
    for r in rendered.values():
        for obj in r.of_kind(*WORKLOADS):
            name = f"{r.name} {obj['kind']}/{obj['metadata']['name']}"
            spec = pod_spec(obj)
            pod = spec["securityContext"]
            assert pod["runAsNonRoot"] is True and pod["seccompProfile"]["type"] == "RuntimeDefault", name
            assert spec.get("automountServiceAccountToken") is False, name
            for c in containers(obj):
                sc = c["securityContext"]
                assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False, name
                assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"], name
                assert sc["seccompProfile"]["type"] == "RuntimeDefault" and not sc.get("privileged"), name
                assert sc.get("runAsUser", pod.get("runAsUser")) == 10001, name
                for kind in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, c["name"], kind)
                if is_fathom(c):  # Fathom writes only under its cache, data and temp directories
                    mounts = {m["mountPath"] for m in c.get("volumeMounts", [])}
                    if c["name"] != "seed-cache":
                        assert {"/tmp", "/var/cache/fathom", "/var/lib/fathom"} <= mounts, name


def test_fetch_memory_limit_is_the_measured_one(rendered: dict[str, Rendered]) -> None:
    """The fetch pools' limits come from tests/deploy/measure_fetch_memory.py (docs/DEPLOY.md); the
    comment beside them holds the numbers. Prod's limit covers the measured peak with headroom."""
    text = (K8S / "base" / "workers.yaml").read_text()
    assert "measure_fetch_memory" in text
    prod = rendered["prod"]
    for lane in ("live", "train"):
        c = pod_spec(prod.get("Deployment", f"fathom-worker-fetch-{lane}"))["containers"][0]
        assert c["resources"]["limits"]["memory"] == "3Gi" and c["resources"]["requests"]["memory"] == "2Gi"


def _allowed(policy_rules: list[dict[str, Any]], ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    for rule in policy_rules:
        for peer in rule.get("to", []):
            block = peer.get("ipBlock")
            if block is None:
                continue
            net = ipaddress.ip_network(block["cidr"])
            if addr.version == net.version and addr in net and not any(
                    addr in ipaddress.ip_network(e) for e in block.get("except", [])):
                return True
    return False


def test_network_policies_deny_by_default_and_fence_the_fetch_workers(rendered: dict[str, Rendered]) -> None:
    for overlay in ("dev", "prod"):
        r = rendered[overlay]
        policies = r.of_kind("NetworkPolicy")
        deny = r.get("NetworkPolicy", "fathom-default-deny")["spec"]
        assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
        assert "ingress" not in deny and "egress" not in deny

        fetch = pod_labels(r.get("Deployment", "fathom-worker-fetch-live"))
        egress = [rule for p in policies if "Egress" in p["spec"]["policyTypes"]
                  and labels_match(p["spec"]["podSelector"], fetch) for rule in p["spec"].get("egress", [])]
        assert _allowed(egress, "93.184.215.14") and _allowed(egress, "2606:4700::6810:85e5")  # the internet
        # Never the metadata service, the usual pod/service/node ranges, loopback.
        for ip in ("169.254.169.254", "fd00:ec2::254", "10.96.0.1", "10.244.1.5", "172.20.0.10",
                   "192.168.1.1", "100.64.0.10", "127.0.0.1", "::1"):
            blocked_ports = [rule for rule in egress if not rule.get("ports")]
            assert not _allowed(blocked_ports, ip), f"{overlay}: fetch may reach {ip} on any port"
        # In the cluster: only named pods (stores, the extractor's server, the dev web) on their
        # ports, by selector, and the cluster DNS.
        for rule in egress:
            for peer in rule.get("to", []):
                if "namespaceSelector" in peer:
                    assert peer == {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}, peer
                    assert {port["port"] for port in rule["ports"]} == {53}
                elif "podSelector" in peer:
                    assert peer["podSelector"], f"{overlay}: fetch egress to every pod"
                    assert rule.get("ports"), f"{overlay}: fetch egress to pods on any port"

        # The gateway is the only pod open to traffic from outside the namespace (but Prometheus on
        # the metrics port and KEDA on Redis, by namespace name).
        for p in policies:
            for rule in p["spec"].get("ingress", []):
                open_peers = [peer for peer in rule.get("from", []) if "ipBlock" in peer
                              or peer.get("namespaceSelector") == {}]
                if open_peers:
                    gateway = {"matchLabels": {"app.kubernetes.io/name": "fathom-gateway"}}
                    assert p["spec"]["podSelector"] == gateway
                    assert [port["port"] for port in rule["ports"]] == [50051]
                for peer in rule.get("from", []):
                    names = peer.get("namespaceSelector", {}).get("matchLabels", {})
                    assert names in ({}, {"kubernetes.io/metadata.name": "monitoring"},
                                     {"kubernetes.io/metadata.name": "keda"}), names
        services = r.of_kind("Service")
        assert not [s for s in services if s["spec"].get("type") in ("LoadBalancer", "NodePort")]
    ingress = rendered["prod"].of_kind("Ingress")
    assert [i["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] for i in ingress] == [
        "fathom-gateway"]


# -- metrics, migration ---------------------------------------------------------------------------------


def test_every_metrics_port_is_scraped(rendered: dict[str, Rendered]) -> None:
    prod = rendered["prod"]
    (monitor,) = prod.of_kind("ServiceMonitor")
    selected = [s for s in prod.of_kind("Service")
                if labels_match(monitor["spec"]["selector"], s["metadata"].get("labels", {}))]
    endpoint_ports = {e["port"] for e in monitor["spec"]["endpoints"]}
    for r in (rendered["dev"], prod):
        for d in r.of_kind("Deployment"):
            c = pod_spec(d)["containers"][0]
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            port_name = "metrics" if "metrics" in ports else "http" if "vllm" in c["image"] else None
            if port_name is None:
                continue
            annotations = d["spec"]["template"]["metadata"].get("annotations", {})
            assert annotations.get("prometheus.io/scrape") == "true"
            assert annotations.get("prometheus.io/port") == str(ports[port_name]), d["metadata"]["name"]
            if r is prod:  # behind a Service the ServiceMonitor selects, on a port it scrapes
                labels = pod_labels(d)
                covering = [s for s in selected
                            if labels_match({"matchLabels": s["spec"]["selector"]}, labels)
                            and port_name in {p["name"] for p in s["spec"]["ports"]}]
                assert covering and port_name in endpoint_ports, d["metadata"]["name"]
            if "metrics" in ports:
                assert ports["metrics"] == 9100
                assert container_env(r, c).values.get("FATHOM_PLANE__METRICS_PORT") == "9100"


def test_migration_job_runs_first_with_all_it_needs(rendered: dict[str, Rendered]) -> None:
    """k8s/deploy.sh applies the objects labelled fathom.dev/phase=pre-rollout, waits for the
    migration Job, then applies everything: that first set must be enough for the Job to run."""
    script = (K8S / "deploy.sh").read_text()
    first = script.index('apply -k "$dir" -l fathom.dev/phase=pre-rollout')
    wait = script.index("wait --for=condition=complete job/fathom-migrate")
    assert first < wait < script.index('apply -k "$dir"\n', wait)
    for overlay in ("dev", "prod"):
        r = rendered[overlay]
        pre = [d for d in r.docs if d["metadata"].get("labels", {}).get("fathom.dev/phase") == "pre-rollout"]
        have = {(d["kind"], d["metadata"]["name"]) for d in pre}
        job = r.get("Job", "fathom-migrate")
        assert ("Job", "fathom-migrate") in have and ("Namespace", "fathom") in have
        spec = pod_spec(job)
        assert ("ServiceAccount", spec["serviceAccountName"]) in have
        c = spec["containers"][0]
        for source in c["envFrom"]:
            assert ("ConfigMap", source["configMapRef"]["name"]) in have
        secret_names = {e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"]
                        if "secretKeyRef" in e.get("valueFrom", {})}
        for name in secret_names:  # dev: generated here; prod: created by the operator beforehand
            assert ("Secret", name) in have if overlay == "dev" else name == "fathom-secrets"
        # The Job may talk to the store: the policies that allow it are applied with it.
        job_labels = pod_labels(job)
        egress = [p for p in pre if p["kind"] == "NetworkPolicy" and "Egress" in p["spec"]["policyTypes"]
                  and labels_match(p["spec"]["podSelector"], job_labels)]
        ports = {port["port"] for p in egress for rule in p["spec"].get("egress", [])
                 for port in rule.get("ports", [])}
        assert {53, 5432} <= ports, (overlay, ports)
        if overlay == "dev":  # the in-cluster PostgreSQL comes up in the first phase too
            assert {("StatefulSet", "fathom-postgres"), ("Service", "fathom-postgres")} <= have


if __name__ == "__main__":  # pragma: no cover - `python tests/deploy/test_k8s.py` runs this file
    sys.exit(pytest.main([__file__, "-q", "-p", "no:cacheprovider"]))

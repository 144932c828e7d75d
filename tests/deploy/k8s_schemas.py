"""Validate rendered Kubernetes manifests against their schemas, offline; run by tests/deploy/test_k8s.py
with the deployment tools' interpreter (.venv/deploy/bin/python, where kubernetes-validate and
jsonschema are installed).

    python tests/deploy/k8s_schemas.py --kubernetes-version 1.37 rendered.yaml [...]

Built-in kinds are checked by kubernetes-validate (the Kubernetes OpenAPI schemas it ships, strict:
an unknown field is an error). Custom resources are checked with jsonschema against the
openAPIV3Schema of the CRDs vendored in tests/deploy/schemas/ (README.md there says where each comes
from), made as strict as the API server's field validation: an object schema that lists its
properties and neither allows additional ones nor preserves unknown fields rejects any other field.
A kind with neither is an error. Prints one JSON document: {"objects", "kubernetes", "crd", "errors"}.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

SCHEMAS = Path(__file__).resolve().parent / "schemas"

# kubernetes-validate reads and parses its schema files (the definitions file is several MB) on
# every call; they never change within a run, and nothing mutates them.
kubernetes_validate.utils.schema_contents = functools.lru_cache(maxsize=None)(  # type: ignore[attr-defined]
    kubernetes_validate.utils.schema_contents)  # type: ignore[attr-defined]


def strict(schema: Any) -> Any:
    """A copy of a CRD structural schema where listed properties are the only ones allowed."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> a validator, for every served version of every vendored CRD."""
    found: dict[tuple[str, str], jsonschema.protocols.Validator] = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            if not version.get("served", True):
                continue
            schema = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
            # metadata is an ObjectMeta (validated by the API server itself, not by the CRD schema).
            schema["properties"]["metadata"] = {"type": "object"}
            cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
            found[(f"{group}/{version['name']}", kind)] = cls(schema)
    return found


def validate(docs: list[dict[str, Any]], version: str) -> dict[str, Any]:
    validators = crd_validators()
    report: dict[str, Any] = {"objects": len(docs), "kubernetes": 0, "crd": 0, "errors": []}
    for doc in docs:
        name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        key = (doc.get("apiVersion", ""), doc.get("kind", ""))
        if key in validators:
            errors = sorted(validators[key].iter_errors(doc), key=lambda e: list(e.absolute_path))
            for e in errors:
                where = "/".join(str(p) for p in e.absolute_path) or "(root)"
                report["errors"].append(f"{name}: {where}: {e.message}")
            report["crd"] += 1
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
            report["kubernetes"] += 1
        except kubernetes_validate.SchemaNotFoundError:
            report["errors"].append(
                f"{name}: no schema for {key[0]} {key[1]} (Kubernetes {version} or vendored CRDs)")
        except kubernetes_validate.ValidationError as exc:
            path = "/".join(str(p) for p in exc.path) or "(root)"
            report["errors"].append(f"{name}: {path}: {exc.message}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kubernetes-version", required=True)
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    docs = [d for f in args.files for d in yaml.safe_load_all(f.read_text()) if d]
    report = validate(docs, args.kubernetes_version)
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

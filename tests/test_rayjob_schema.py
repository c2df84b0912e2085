"""The KubeRay RayJob manifests (every `cluster/*.yaml` document of kind RayJob) against KubeRay's
own RayJob CRD schema, vendored in tests/data/kuberay (see its README), offline.

As strict as `kubectl apply --validate=strict` against a cluster running that KubeRay: unknown
fields (misspellings) are errors, not silently dropped, and so are wrong types, missing required
fields and values outside an enum. Kubernetes validates `metadata` itself (the CRD leaves it a
plain object); CEL rules (x-kubernetes-validations), list-map key uniqueness and int32/int64 ranges
are not checked here. Static only: nothing here starts Ray or talks to a cluster.
"""

import copy
import functools
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

from conftest import ROOT

KUBERAY_TAG = "v1.5.1"  # the first KubeRay release whose RayJob has rayClusterSpec.authOptions
SCHEMA_FILE = ROOT / "tests" / "data" / "kuberay" / f"rayjob-openapi-{KUBERAY_TAG}.json"
API_VERSION = "ray.io/v1"  # the CRD version whose schema is vendored (served and stored)


def _rayjobs(path: Path) -> list[dict]:
    docs = yaml.safe_load_all(path.read_text(encoding="utf-8"))
    return [d for d in docs if isinstance(d, dict) and d.get("kind") == "RayJob"]


RAYJOBS = [p for p in sorted((ROOT / "cluster").glob("*.yaml")) if _rayjobs(p)]


def _strict(schema: dict) -> dict:
    """A deep copy of a CRD's structural schema with Kubernetes' rules spelled out for jsonschema:
    an object schema with `properties` and no `additionalProperties` rejects other fields (unless
    x-kubernetes-preserve-unknown-fields), x-kubernetes-int-or-string takes ints and strings, and
    OpenAPI's `nullable` allows null."""
    schema = copy.deepcopy(schema)

    def fix(node: dict) -> None:
        if node.get("x-kubernetes-int-or-string") and "anyOf" not in node:
            node.pop("type", None)
            node["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if node.get("nullable") and isinstance(node.get("type"), str):
            node["type"] = [node["type"], "null"]
        if (
            "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        children = [*node.get("properties", {}).values(), *node.get("anyOf", [])]
        children += [*node.get("allOf", []), *node.get("oneOf", [])]
        children += [node[k] for k in ("items", "additionalProperties", "not") if k in node]
        for child in children:
            if isinstance(child, dict):
                fix(child)

    fix(schema)
    return schema


@functools.cache
def _validator() -> jsonschema.Draft202012Validator:
    schema = _strict(json.loads(SCHEMA_FILE.read_text(encoding="utf-8")))
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _path(parts) -> str:
    """spec.rayClusterSpec.workerGroupSpecs[0].template, resources.limits["nvidia.com/gpu"]."""
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out or "<root>"


def _errors(doc) -> list[str]:
    """Every schema error in doc, one `path: message` line each, sorted by path. An unknown field
    is named by its own path, as Kubernetes does (`unknown field "spec.foo"`)."""
    lines = []
    for err in _validator().iter_errors(doc):
        if err.validator == "additionalProperties" and err.validator_value is False:
            known = err.schema.get("properties", {})
            lines += [
                f"{_path([*err.absolute_path, key])}: unknown field"
                for key in err.instance
                if key not in known
            ]
        else:
            lines.append(f"{_path(err.absolute_path)}: {err.message}")
    return sorted(lines)


def _manifest() -> dict:
    """A fresh copy of the first RayJob, for the tests that break it on purpose."""
    return _rayjobs(RAYJOBS[0])[0]


def _worker(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]


def _worker_container(doc: dict) -> dict:
    return _worker(doc)["template"]["spec"]["containers"][0]


def _new_errors(doc: dict) -> list[str]:
    """The errors in doc that the unmodified manifest does not have."""
    baseline = set(_errors(_manifest()))
    return [e for e in _errors(doc) if e not in baseline]


def test_there_is_a_rayjob():
    assert RAYJOBS, "no cluster/*.yaml of kind RayJob"


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.name)
def test_rayjob_api_version_is_the_vendored_crd_version(path):
    for doc in _rayjobs(path):
        assert doc.get("apiVersion") == API_VERSION, (
            f"{path.name}: apiVersion {doc.get('apiVersion')!r}; the vendored schema is KubeRay "
            f"{KUBERAY_TAG}'s {API_VERSION}"
        )


@pytest.mark.parametrize("path", RAYJOBS, ids=lambda p: p.name)
def test_rayjob_matches_kuberay_crd(path):
    for doc in _rayjobs(path):
        errors = _errors(doc)
        assert not errors, (
            f"{path.name} does not match KubeRay {KUBERAY_TAG}'s RayJob CRD "
            f"({len(errors)} errors):\n" + "\n".join(errors)
        )


def _misspell_spec_field(doc):
    doc["spec"]["shutdownAfterJobFinish"] = doc["spec"].pop("shutdownAfterJobFinishes", True)


def _misspell_container_field(doc):
    container = _worker_container(doc)
    container["resorces"] = container.pop("resources", {})


def _misspell_auth_field(doc):
    doc["spec"]["rayClusterSpec"]["authOptions"] = {"mod": "token"}


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        (_misspell_spec_field, "spec.shutdownAfterJobFinish: unknown field"),
        (
            _misspell_container_field,
            "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0].resorces: "
            "unknown field",
        ),
        (_misspell_auth_field, "spec.rayClusterSpec.authOptions.mod: unknown field"),
    ],
    ids=["spec", "container", "authOptions"],
)
def test_unknown_field_is_rejected_by_its_path(break_it, expected):
    doc = _manifest()
    break_it(doc)
    assert _new_errors(doc) == [expected]


def _set_worker_replicas(doc):
    _worker(doc)["replicas"] = "two"


def _set_shutdown(doc):
    doc["spec"]["shutdownAfterJobFinishes"] = "yes"


def _set_auth_mode(doc):
    doc["spec"]["rayClusterSpec"]["authOptions"] = {"mode": "tokens"}


def _drop_group_name(doc):
    del _worker(doc)["groupName"]


def _set_float_cpu(doc):
    # Kubernetes quantities in a CRD are int-or-string: a YAML float (cpu: 0.5) is refused.
    _worker_container(doc).setdefault("resources", {}).setdefault("requests", {})["cpu"] = 0.5


@pytest.mark.parametrize(
    ("break_it", "path", "message"),
    [
        (_set_worker_replicas, "spec.rayClusterSpec.workerGroupSpecs[0].replicas", "'integer'"),
        (_set_shutdown, "spec.shutdownAfterJobFinishes", "'boolean'"),
        (_set_auth_mode, "spec.rayClusterSpec.authOptions.mode", "'tokens' is not one of"),
        (_drop_group_name, "spec.rayClusterSpec.workerGroupSpecs[0]", "'groupName' is a required"),
        (
            _set_float_cpu,
            "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0]"
            ".resources.requests.cpu",
            "not valid under any of the given schemas",
        ),
    ],
    ids=["replicas-string", "shutdown-string", "auth-mode-enum", "required-groupName", "cpu-float"],
)
def test_wrong_value_is_rejected_by_its_path(break_it, path, message):
    doc = _manifest()
    break_it(doc)
    errors = _new_errors(doc)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{path}: ") and message in errors[0], errors


def test_quantities_take_ints_and_strings():
    doc = _manifest()
    container = _worker_container(doc)
    quantities = {"cpu": 8, "memory": "32Gi", "nvidia.com/gpu": 1, "ephemeral-storage": "500M"}
    container["resources"] = {"requests": dict(quantities), "limits": {**quantities, "cpu": "8"}}
    assert _new_errors(doc) == []
    container["resources"]["limits"]["memory"] = "32 GiB"  # not a Kubernetes quantity
    errors = _new_errors(doc)
    assert len(errors) == 1, errors
    assert errors[0].startswith(
        "spec.rayClusterSpec.workerGroupSpecs[0].template.spec.containers[0]"
        ".resources.limits.memory: '32 GiB' does not match"
    ), errors

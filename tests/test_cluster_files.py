"""The cluster files: Ray launcher configs (`ray up`), the KubeRay RayJob, and the run configs
they point at. Static checks only: nothing here starts Ray or imports it."""

import importlib.metadata
import json
import math
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml

from job.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"
CONFIGS = ROOT / "configs"
RAY_VERSION = importlib.metadata.version("ray")
RAY_SCHEMA = Path(
    importlib.metadata.distribution("ray").locate_file("ray/autoscaler/ray-schema.json")
)
TOKEN_FILE = "~/.ray/auth_token"


def _load(path: Path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _is_rayjob(doc) -> bool:
    return isinstance(doc, dict) and doc.get("kind") == "RayJob"


CLUSTER_YAMLS = sorted(CLUSTER.glob("*.yaml"))
LAUNCHERS = [p for p in CLUSTER_YAMLS if not _is_rayjob(_load(p))]
RAYJOBS = [p for p in CLUSTER_YAMLS if _is_rayjob(_load(p))]
CONFIG_YAMLS = sorted(CONFIGS.glob("*.yaml"))
TEXT_FILES = sorted([*CLUSTER.glob("*.yaml"), *CLUSTER.glob("*.md"), *CONFIG_YAMLS])


def _lock_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[_norm(name)] = version.strip()
    return pins


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.split("[", 1)[0]).strip().lower()


def _dockerfile_base() -> str:
    """The image cluster/Dockerfile builds FROM (its ARG default)."""
    text = (CLUSTER / "Dockerfile").read_text(encoding="utf-8")
    return re.search(r"^ARG RAY_IMAGE=(\S+)", text, re.M).group(1)


def _check_image(image: str, where: str) -> None:
    """The project's image (cluster/Dockerfile, pushed as REGISTRY/seq2seq:TAG) or a stock Ray
    image of the pinned Ray and Python."""
    repo, _, tag = image.rpartition(":")
    if repo.rsplit("/", 1)[-1] == "seq2seq":
        assert "/" in repo and tag, f"{where}: {image!r} should be REGISTRY/seq2seq:TAG"
        _check_stock_image(_dockerfile_base(), "cluster/Dockerfile FROM")
        return
    _check_stock_image(image, where)


def _check_stock_image(image: str, where: str) -> None:
    repo, _, tag = image.partition(":")
    assert repo == "rayproject/ray", (
        f"{where}: {image!r} is not a rayproject/ray image (ray-ml images are frozen)"
    )
    assert tag.startswith(RAY_VERSION + "-"), (
        f"{where}: {image!r} is not Ray {RAY_VERSION} (the version in requirements.lock)"
    )
    assert "py311" in tag.split("-"), f"{where}: {image!r} is not the Python 3.11 image"


def _gpu_configs():
    out = []
    for path in CONFIG_YAMLS:
        cfg = load_config(path)
        if cfg.scaling.use_gpu:
            out.append((path, cfg))
    return out


def test_the_expected_files_exist():
    assert {"aws.yaml", "gcp.yaml"} <= {p.name for p in LAUNCHERS}
    assert "kuberay-rayjob.yaml" in {p.name for p in RAYJOBS}
    assert (CLUSTER / "README.md").is_file()
    assert _gpu_configs(), "no at-scale GPU config in configs/"


# ----------------------------------------------------------------------------- the image


def test_dockerfile_builds_the_pinned_stack_with_cuda_torch():
    """What can be checked without a Docker engine (none runs on this machine): the base image,
    the lock installed before the code (a cached layer), the build failing on a CPU torch, the
    copy of the lock the launchers compare against, and what the build context leaves out."""
    text = (CLUSTER / "Dockerfile").read_text(encoding="utf-8")
    base = _dockerfile_base()
    assert base == f"rayproject/ray:{RAY_VERSION}-py311-gpu", base
    assert re.search(r"^FROM \$\{RAY_IMAGE\}$", text, re.M)
    lock_copy = text.index("COPY --chown=ray:users requirements.lock")
    install = re.search(r"pip install [^\n]*-r (\S+requirements\.lock)", text)
    assert install and lock_copy < install.start() < text.index("COPY --chown=ray:users . ")
    assert "torch.version.cuda" in text[install.start() :], "the build must fail on a CPU torch"
    # PyPI's torch==2.13.0 for Linux x86_64 is the CUDA build; a local version (+cpu) would not be
    assert _lock_pins()["torch"] == "2.13.0"
    ignored = (ROOT / ".dockerignore").read_text(encoding="utf-8").split()
    assert {".git", ".venv", "runs"} <= set(ignored)


# ----------------------------------------------------------------------------- launcher configs


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_config_validates_against_rays_schema(path):
    schema = json.loads(RAY_SCHEMA.read_text(encoding="utf-8"))
    jsonschema.validate(_load(path), schema)


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_images_match_the_pinned_ray_and_python(path):
    cfg = _load(path)
    docker = cfg.get("docker") or {}
    head = docker.get("head_image", docker.get("image"))
    worker = docker.get("worker_image", docker.get("image"))
    assert head and worker, f"{path.name}: docker needs an image for the head and the workers"
    _check_image(head, f"{path.name} head")
    _check_image(worker, f"{path.name} workers")
    for name, node in cfg["available_node_types"].items():
        if "worker_image" in node.get("docker", {}):
            _check_image(node["docker"]["worker_image"], f"{path.name} {name}")
    assert docker.get("container_name")


def _node_commands(cfg: dict, node_type: str) -> list[str]:
    """Setup commands a node of this type runs, as the launcher composes them."""
    if node_type == cfg["head_node_type"]:
        return [*cfg.get("setup_commands", []), *cfg.get("head_setup_commands", [])]
    node = cfg["available_node_types"][node_type]
    if "worker_setup_commands" in node:  # a node type's own list replaces both global lists
        return list(node["worker_setup_commands"])
    return [*cfg.get("setup_commands", []), *cfg.get("worker_setup_commands", [])]


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_every_node_installs_requirements_lock_from_the_synced_repo(path):
    """With the project's image the install is skipped (the image keeps a copy of the lock it
    installed); with a stock image, or an image older than the lock, it runs."""
    cfg = _load(path)
    repo_mounts = [
        remote
        for remote, local in cfg.get("file_mounts", {}).items()
        if local.rstrip("/") in (".", "")
    ]
    assert repo_mounts, f"{path.name}: file_mounts must sync the repository ('.') to the nodes"
    stamp = re.search(
        r"cp \S*requirements\.lock (\S+)", (CLUSTER / "Dockerfile").read_text(encoding="utf-8")
    ).group(1)
    stamp = stamp.replace("/home/ray/", "~/")  # the image's user is ray, home /home/ray
    for node_type in cfg["available_node_types"]:
        installs = [
            c
            for c in _node_commands(cfg, node_type)
            if re.search(r"\bpip install\b.*-r\s+requirements\.lock\b", c)
        ]
        assert installs, (
            f"{path.name}: node type {node_type} never runs pip install -r requirements.lock"
        )
        assert any(f"cd {m}" in c for c in installs for m in repo_mounts), (
            f"{path.name}: {node_type} installs requirements.lock "
            f"outside the synced repository {repo_mounts}"
        )
        assert all(f"cmp -s requirements.lock {stamp} ||" in c for c in installs), (
            f"{path.name}: {node_type} should skip the install when the image has the lock "
            f"({stamp}, written by cluster/Dockerfile)"
        )


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_keeps_token_authentication_on(path):
    cfg = _load(path)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in cfg[key] if "ray start" in c]
        assert starts, f"{path.name}: {key} has no `ray start`"
        for c in starts:
            assert re.search(r"RAY_AUTH_MODE=token\s+ray start", c), (
                f"{path.name}: {key} starts Ray without RAY_AUTH_MODE=token"
            )
    assert cfg.get("file_mounts", {}).get(TOKEN_FILE) == TOKEN_FILE, (
        f"{path.name}: the token ({TOKEN_FILE}) must be copied to every node"
    )


def _gpu_types(cfg: dict) -> dict[str, dict]:
    types = cfg["available_node_types"]
    return {n: t for n, t in types.items() if t["resources"].get("GPU", 0) >= 1}


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_has_cpu_head_and_autoscaling_gpu_workers(path):
    cfg = _load(path)
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert not head["resources"].get("GPU"), f"{path.name}: the head should be a CPU node"
    gpu_types = _gpu_types(cfg)
    assert gpu_types, f"{path.name}: no GPU worker node type"
    for name, t in gpu_types.items():
        assert t.get("min_workers", 0) == 0, f"{path.name}: {name} should scale from 0"
    assert any(t["max_workers"] >= 1 for t in gpu_types.values()), (
        f"{path.name}: every GPU layout is switched off"
    )
    assert cfg["max_workers"] >= max(t["max_workers"] for t in gpu_types.values())
    assert {t["resources"]["GPU"] for t in gpu_types.values()} >= {1, 4}, (
        f"{path.name}: offer a single-GPU and a multi-GPU node layout"
    )


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_gpu_workers_get_the_gpus_in_their_container(path):
    """Ray adds --runtime=nvidia only when `docker info` lists that runtime; --gpus all always
    hands the host's GPUs to the container (NVIDIA container toolkit)."""
    cfg = _load(path)
    docker = cfg["docker"]
    for name in _gpu_types(cfg):
        options = (
            cfg["available_node_types"][name]
            .get("docker", {})
            .get("worker_run_options", docker.get("worker_run_options", []))
        )
        assert "--gpus all" in options, f"{path.name}: {name} runs without --gpus all"
    assert "--gpus all" not in docker.get("run_options", []) + docker.get("head_run_options", [])


def _ray_train_capacity(nodes: list[tuple[int, float, float]], cpus_per_worker: float) -> int:
    """Ray Train workers (1 GPU + cpus_per_worker CPUs each) that fit on (count, gpus, cpus)
    nodes."""
    return sum(
        count * min(int(gpus), math.floor(cpus / cpus_per_worker)) for count, gpus, cpus in nodes
    )


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_gpu_configs_fit_each_node_layout(path):
    """The layout that is on fits every GPU run config as it is; each other GPU node type fits
    it once switched on (its max_workers raised up to the cluster's max_workers)."""
    cfg = _load(path)
    types = _gpu_types(cfg)
    current = [
        (t["max_workers"], t["resources"]["GPU"], t["resources"].get("CPU", 0))
        for t in types.values()
    ]
    for cfg_path, run in _gpu_configs():
        capacity = _ray_train_capacity(current, run.scaling.cpus_per_worker)
        assert capacity >= run.scaling.num_workers, (
            f"{cfg_path.name} asks for {run.scaling.num_workers} GPU workers; "
            f"{path.name} fits {capacity}"
        )
        for name, t in types.items():
            alone = [(cfg["max_workers"], t["resources"]["GPU"], t["resources"].get("CPU", 0))]
            assert _ray_train_capacity(alone, run.scaling.cpus_per_worker) >= (
                run.scaling.num_workers
            ), f"{cfg_path.name} does not fit {path.name}'s {name} layout"


@pytest.mark.parametrize("path", LAUNCHERS, ids=lambda p: p.name)
def test_launcher_worker_driver_runs_torchs_cuda(path):
    """torch 2.13.0 from PyPI is a CUDA 13.0 build (cuda-toolkit 13.0.3), which needs NVIDIA
    driver 580 or newer; a GCP image family names its driver, e.g. ...-nvidia-580."""
    text = path.read_text(encoding="utf-8")
    for family in re.findall(r"images/family/(\S+)", text):
        driver = re.search(r"nvidia-(\d+)$", family)
        assert driver and int(driver.group(1)) >= 580, f"{path.name}: {family}: driver < 580"
    assert "580 or newer" in text


def test_gcp_nodes_turn_os_login_off():
    """Ray's SSH key lives in the project metadata, which a VM with OS Login ignores."""
    cfg = _load(CLUSTER / "gcp.yaml")
    for name, t in cfg["available_node_types"].items():
        items = {
            i["key"]: i["value"] for i in t["node_config"].get("metadata", {}).get("items", [])
        }
        assert items.get("enable-oslogin") == "FALSE", f"gcp.yaml: {name} keeps OS Login"


# ----------------------------------------------------------------------------- AWS IAM

IAM = CLUSTER / "aws-iam"


def _statements(name: str) -> list[dict]:
    return json.loads((IAM / name).read_text(encoding="utf-8"))["Statement"]


def _actions(statements) -> set[str]:
    out = set()
    for st in statements:
        acts = st["Action"]
        out |= {acts} if isinstance(acts, str) else set(acts)
    return out


def test_aws_nodes_carry_the_roles_cluster_aws_iam_makes():
    cfg = _load(CLUSTER / "aws.yaml")
    create = (IAM / "create.sh").read_text(encoding="utf-8")
    profiles = {}
    for name, t in cfg["available_node_types"].items():
        arn = t["node_config"].get("IamInstanceProfile", {}).get("Arn", "")
        profiles[name] = arn.rsplit("/", 1)[-1]
        assert profiles[name] and profiles[name] in create, (
            f"aws.yaml: {name} needs an instance profile that cluster/aws-iam/create.sh makes"
        )
    head = profiles.pop(cfg["head_node_type"])
    workers = set(profiles.values())
    assert head not in workers and len(workers) == 1
    passes = [st for st in _statements("head-policy.json") if "iam:PassRole" in _actions([st])]
    assert [st["Resource"] for st in passes] == [
        f"arn:aws:iam::YOUR_ACCOUNT_ID:role/{workers.pop()}"
    ], "the head may pass the workers' role, and only that"


def test_aws_policies_scope_storage_to_the_bucket():
    for name in ("head-policy.json", "worker-policy.json"):
        for st in _statements(name):
            if any(a.startswith("s3:") for a in _actions([st])):
                resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
                assert set(resources) <= {"arn:aws:s3:::YOUR_BUCKET", "arn:aws:s3:::YOUR_BUCKET/*"}
    assert not any(
        a.startswith(("ec2:", "iam:")) for a in _actions(_statements("worker-policy.json"))
    )


def test_aws_head_policy_allows_every_ec2_call_of_rays_node_provider():
    """The calls Ray 2.60's AWS node provider makes on the head (boto3 names in its source,
    called or handed around as functions, e.g. terminate_instances)."""
    source = Path(
        importlib.metadata.distribution("ray").locate_file(
            "ray/autoscaler/_private/aws/node_provider.py"
        )
    ).read_text(encoding="utf-8")
    calls = set(re.findall(r"\.client\.(\w+)\b|ec2\w*\.(create_instances)\(", source))
    names = {a or b for a, b in calls} | {"describe_instances"}  # ec2.instances.filter(...)
    needed = {
        "ec2:" + ("RunInstances" if n == "create_instances" else n.title().replace("_", ""))
        for n in names
    }
    assert {"ec2:RunInstances", "ec2:TerminateInstances", "ec2:CreateTags"} <= needed
    assert needed <= _actions(_statements("head-policy.json"))


# ----------------------------------------------------------------------------- KubeRay RayJob


@pytest.fixture(params=RAYJOBS, ids=lambda p: p.name)
def rayjob(request):
    return _load(request.param)


def test_rayjob_manifest_shape(rayjob):
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    assert rayjob["metadata"]["name"]
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == RAY_VERSION
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"]
    assert cluster["workerGroupSpecs"] and all(
        g["template"]["spec"]["containers"] for g in cluster["workerGroupSpecs"]
    )


def test_rayjob_entrypoint_trains_then_translates_with_a_real_config(rayjob):
    entrypoint = rayjob["spec"]["entrypoint"]
    assert isinstance(entrypoint, str) and entrypoint.strip()
    assert "python -m job train" in entrypoint
    assert "python -m job translate" in entrypoint
    configs = re.findall(r"--config\s+(\S+?)['\";]*(?:\s|$)", entrypoint)
    assert configs, "the train command names no --config"
    for c in configs:
        assert (ROOT / c).is_file(), f"entrypoint config {c} does not exist"
        load_config(ROOT / c)
    # KubeRay pastes the entrypoint into a shell line after `ray job submit ... --`: it must be one
    # quoted command, or `&&`, `;` and `|` would run in the submitter pod instead of the job.
    words = shlex.split(entrypoint)
    assert words[:2] == ["bash", "-c"] and len(words) == 3, (
        "entrypoint must be a single bash -c '...' command"
    )


def test_rayjob_runs_the_image_without_per_job_installs(rayjob):
    """The image holds the code and the pinned packages: the runtime env uploads and installs
    nothing, and the entrypoint runs from the directory the image put the repository in."""
    runtime_env = yaml.safe_load(rayjob["spec"]["runtimeEnvYAML"])
    assert isinstance(runtime_env, dict) and isinstance(runtime_env.get("env_vars", {}), dict)
    assert not {"pip", "uv", "conda", "working_dir", "py_modules"} & set(runtime_env)
    workdir = re.search(
        r"^WORKDIR (\S+)", (CLUSTER / "Dockerfile").read_text(encoding="utf-8"), re.M
    ).group(1)
    assert f"cd {workdir};" in rayjob["spec"]["entrypoint"]


def test_rayjob_fallback_pins_match_the_lock(rayjob):
    """The commented pip fallback (stock images) pins what requirements.lock pins."""
    text = (CLUSTER / "kuberay-rayjob.yaml").read_text(encoding="utf-8")
    packages = re.findall(r"([A-Za-z][\w.-]*)==([\w.]+)", text.split("runtimeEnvYAML")[0])
    pins = _lock_pins()
    assert any(_norm(name) == "torch" for name, _ in packages), "the fallback needs torch"
    for name, version in packages:
        assert pins.get(_norm(name)) == version, (
            f"{name}=={version} differs from requirements.lock ({pins.get(_norm(name))})"
        )


def test_rayjob_gives_every_pod_shared_memory(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"]] + [
        g["template"] for g in cluster["workerGroupSpecs"]
    ]
    for t in templates:
        volumes = {
            v["name"]
            for v in t["spec"].get("volumes", [])
            if v.get("emptyDir", {}).get("medium") == "Memory"
        }
        for c in t["spec"]["containers"]:
            mounts = {m["name"] for m in c.get("volumeMounts", []) if m["mountPath"] == "/dev/shm"}
            assert mounts & volumes, f"{c['name']}: no memory-backed /dev/shm"


def test_rayjob_images_gpus_and_token_auth(rayjob):
    cluster = rayjob["spec"]["rayClusterSpec"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"]
    for c in head:
        _check_image(c["image"], f"RayJob head container {c['name']}")
    gpu_groups = 0
    for group in cluster["workerGroupSpecs"]:
        for c in group["template"]["spec"]["containers"]:
            _check_image(c["image"], f"RayJob worker group {group['groupName']}")
            limits = c.get("resources", {}).get("limits", {})
            if int(limits.get("nvidia.com/gpu", 0)) >= 1:
                gpu_groups += 1
    assert gpu_groups, "no worker group asks for nvidia.com/gpu"
    assert cluster.get("authOptions", {}).get("mode") == "token", (
        "token authentication must stay on"
    )


def _k8s_cpus(value) -> float:
    value = str(value)
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def test_gpu_configs_fit_the_rayjob_cluster(rayjob):
    entrypoint = rayjob["spec"]["entrypoint"]
    nodes = []
    for group in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        nodes.append(
            (group["maxReplicas"], int(limits.get("nvidia.com/gpu", 0)), _k8s_cpus(limits["cpu"]))
        )
    for cfg_path, run in _gpu_configs():
        if cfg_path.relative_to(ROOT).as_posix() not in entrypoint:
            continue
        capacity = _ray_train_capacity(nodes, run.scaling.cpus_per_worker)
        assert capacity >= run.scaling.num_workers, (
            f"{cfg_path.name}: {run.scaling.num_workers} GPU workers, RayJob fits {capacity}"
        )


# ----------------------------------------------------------------------------- no secrets, auth on

SECRET_PATTERNS = {
    "token auth disabled": re.compile(r"RAY_AUTH_MODE\s*[=:]\s*['\"]?disabled", re.I),
    "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
    "AWS secret access key": re.compile(
        r"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+=]{30,}", re.I
    ),
    "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    "service account key": re.compile(r"\"private_key(_id)?\"\s*:"),
    "literal Ray token": re.compile(r"RAY_AUTH_TOKEN\s*[=:]\s*['\"]?[A-Za-z0-9+/_\-]{16,}"),
    "GitHub token": re.compile(r"\bgh[pousr]_[A-Za-z0-9]{30,}\b"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),
}


def _secrets_in(text: str) -> list[str]:
    return [name for name, pattern in SECRET_PATTERNS.items() if pattern.search(text)]


def test_secret_patterns_catch_what_they_should():
    samples = {
        "token auth disabled": "env:\n  RAY_AUTH_MODE=" + "disabled",
        "AWS access key id": "key: AKIA" + "ABCDEFGHIJKLMNOP",
        "AWS secret access key": "aws_secret_access_key = " + "a" * 40,
        "private key": "-----BEGIN " + "RSA PRIVATE KEY-----",
        "service account key": '{"private_key": "x"}',
        "literal Ray token": "RAY_AUTH_TOKEN=" + "0123456789abcdef0123",
    }
    for name, text in samples.items():
        assert name in _secrets_in(text), name
    assert not _secrets_in(
        "export RAY_AUTH_TOKEN=$(ray get-auth-token)\nRAY_AUTH_MODE=token ray start --head"
    )


@pytest.mark.parametrize("path", TEXT_FILES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_secrets_and_no_disabled_auth(path):
    found = _secrets_in(path.read_text(encoding="utf-8"))
    assert not found, f"{path.relative_to(ROOT)}: {found}"


# ----------------------------------------------------------------------------- run configs


@pytest.mark.parametrize("path", CONFIG_YAMLS, ids=lambda p: p.name)
def test_every_run_config_loads(path):
    cfg = load_config(path)
    assert cfg.name and cfg.storage_path


def test_gpu_configs_use_storage_every_node_reaches():
    for path, cfg in _gpu_configs():
        assert "://" in cfg.storage_path, (
            f"{path.name}: a multi-node run needs s3://, gs:// (or NFS) storage_path"
        )
        for split in ("train", "valid", "test"):
            value = getattr(cfg.data, split)
            paths = (
                []
                if value is None
                else [value]
                if isinstance(value, str)
                else [value.source, value.target]
            )
            assert all("://" in p for p in paths), (
                f"{path.name}: data.{split} must be readable from every node"
            )

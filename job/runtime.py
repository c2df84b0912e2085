"""Connecting to Ray: the cluster in RAY_ADDRESS, or an embedded local one, and the resources
the light Ray Data tasks ask for."""

from __future__ import annotations

import logging
import os
import uuid

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from job import storage
from job.errors import ConfigError

# Reading, normalising, filtering and encoding are light next to training and decoding; asking
# Ray for a quarter CPU each keeps them schedulable while Train workers or translator actors
# hold the whole CPUs (a full-CPU read task would otherwise wait forever behind them).
LIGHT_TASK = {"num_cpus": 0.25}


def init_ray(
    address: str | None = None, verbose: bool = False, num_cpus: int | None = None
) -> None:
    """Connect to the cluster in RAY_ADDRESS / --address (ray job submit sets it), else start an
    embedded local cluster sized to this machine (or to num_cpus)."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    level = logging.INFO if verbose else logging.WARNING
    # Worker output reaches the console only with --verbose: progress comes from metrics.jsonl
    # (job.metrics.ProgressPrinter); failures still surface as the trainer's error.
    if address:
        ray.init(address=address, logging_level=level, log_to_driver=verbose)
    else:
        # No dashboard on the embedded cluster: it costs start-up time and CPU on a laptop; start
        # one with `ray start --head` and point RAY_ADDRESS at it to watch a run there.
        _choose_token_auth()
        ray.init(
            address="local",
            num_cpus=num_cpus,
            include_dashboard=False,
            logging_level=level,
            log_to_driver=verbose,
        )
    # Ray Data's execution plans and its "progress bars disabled" notices are noise here.
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.ERROR)
    logging.getLogger("ray.train").setLevel(level)
    ray.data.DataContext.get_current().enable_progress_bars = verbose


def _choose_token_auth() -> None:
    """Token authentication for the embedded cluster, chosen explicitly (a user's own
    RAY_AUTH_MODE wins). Ray 2.60 turns it on anyway for a new local cluster when RAY_AUTH_MODE
    is unset, with a start-up WARNING saying it did so; its ports listen on every interface, so
    token auth is the right mode. Ray read RAY_AUTH_MODE when it was imported: refresh its
    config the way Ray's own default does (authentication_token_setup._enable_token_auth)."""
    if "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"
        ray._raylet.Config.initialize("")


@ray.remote(num_cpus=0)
def _sees(path: str) -> bool:
    return os.path.exists(path)


def nodes_missing(path: str) -> list[str]:
    """The alive nodes (by address) on which `path` does not exist, asked by a task on each."""
    nodes = [n for n in ray.nodes() if n["Alive"]]
    checks = [
        _sees.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
        ).remote(path)
        for n in nodes
    ]
    seen = ray.get(checks, timeout=120)
    return [n["NodeManagerAddress"] for n, ok in zip(nodes, seen) if not ok]


def check_shared_storage(storage_path: str, min_nodes: int = 2) -> None:
    """A local storage_path on a cluster of min_nodes nodes or more must be a directory every
    node sees (an NFS mount): the workers read the prepared data there and Ray Train writes the
    checkpoints there. Checked before anything is read, with a marker file that a task on each
    node looks for; a URI (s3://, gs://) is reachable by construction."""
    if storage.is_uri(storage_path) or len([n for n in ray.nodes() if n["Alive"]]) < min_nodes:
        return
    os.makedirs(storage_path, exist_ok=True)
    marker = os.path.join(storage_path, f".reachable-{uuid.uuid4().hex[:8]}")
    open(marker, "w").close()
    try:
        missing = nodes_missing(marker)
    finally:
        os.remove(marker)
    if missing:
        raise ConfigError(
            f"storage_path {storage_path} is a local directory that node(s) "
            f"{', '.join(missing)} cannot see; on a multi-node cluster set storage_path to an "
            "s3:// or gs:// URI, or to a directory every node mounts (NFS)"
        )

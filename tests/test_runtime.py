"""Connecting to Ray (job.runtime)."""

import os

import pytest

from job.runtime import LIGHT_TASK, init_ray

pytestmark = pytest.mark.integration


def test_embedded_cluster_runs_with_token_auth_and_quiet_data_progress(ray_cluster):
    assert ray_cluster.is_initialized()
    assert os.environ.get("RAY_AUTH_MODE") == "token"  # chosen explicitly: no start-up warning
    assert ray_cluster.data.DataContext.get_current().enable_progress_bars is False
    init_ray()  # a second call keeps the running cluster
    assert ray_cluster.is_initialized()


def test_light_tasks_fit_beside_whole_cpu_workers(ray_cluster):
    @ray_cluster.remote(**LIGHT_TASK)
    def light():
        return "ran"

    cpus = ray_cluster.cluster_resources().get("CPU", 0)
    assert LIGHT_TASK["num_cpus"] < 1 <= cpus
    assert ray_cluster.get(light.remote(), timeout=60) == "ran"


def test_every_node_is_asked_whether_it_sees_a_path(ray_cluster, tmp_path):
    from job.runtime import nodes_missing

    (tmp_path / "here").write_text("")
    assert nodes_missing(str(tmp_path / "here")) == []
    nodes = [n["NodeManagerAddress"] for n in ray_cluster.nodes() if n["Alive"]]
    assert nodes_missing(str(tmp_path / "not-here")) == nodes


def test_a_shared_storage_path_passes_and_leaves_no_marker(ray_cluster, tmp_path):
    from job.runtime import check_shared_storage

    check_shared_storage(str(tmp_path / "runs"), min_nodes=1)  # one node here: check it anyway
    assert list((tmp_path / "runs").iterdir()) == []
    check_shared_storage("s3://bucket/runs", min_nodes=1)  # a URI: nothing to check

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

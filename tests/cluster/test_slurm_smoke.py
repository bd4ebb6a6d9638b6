"""Smoke test of the localhost SLURM cluster (``slurm_cluster`` fixture, tests/cluster/slurm.sh):
submitit's SlurmExecutor (a single job, a failing job, an array). Hydra's ``submitit_slurm``
launcher on it: test_slurm_parts.py."""

from __future__ import annotations

import time

import pytest

submitit = pytest.importorskip("submitit", reason="submitit not installed (pip install submitit)")

JOB_WAIT_S = 90   # generous upper bound, not a timing assertion: a job takes a few seconds here


def _wait(cluster, jobs, timeout=JOB_WAIT_S):
    """Wait until all submitit jobs are done; on timeout cancel them and fail with the logs."""
    end = time.monotonic() + timeout
    while not all(j.done() for j in jobs):
        if time.monotonic() > end:
            queue = cluster.run("squeue")
            for j in jobs:
                j.cancel(check=False)
            pytest.fail(f"jobs not done after {timeout} s\n{queue}\n"
                        + "\n".join(f"{j.job_id}: {j.stderr() or ''}" for j in jobs)
                        + "\n" + cluster.logs())
        time.sleep(0.5)


def _executor(cluster, folder):
    ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
    ex.update_parameters(timeout_min=5, cpus_per_task=1, slurm_partition=cluster.partition)
    return ex


def _sacct_state(cluster, job, timeout=30):
    """Final state of ``job`` as sacct reports it (accounting records lag a little behind)."""
    end = time.monotonic() + timeout
    while True:
        state = job.watcher.get_state(job.job_id, mode="force")
        if state not in ("UNKNOWN", "PENDING", "RUNNING", "COMPLETING") or time.monotonic() > end:
            return state
        time.sleep(0.5)


def test_cluster_is_up(slurm_cluster):
    assert "idle" in slurm_cluster.run("sinfo", "-h", "-o", "%T")
    assert slurm_cluster.partition in slurm_cluster.run("sinfo", "-h", "-o", "%R")


def test_submitit_single_job(slurm_cluster, tmp_path):
    def add(a, b):   # local function: cloudpickle sends it by value
        import os
        return a + b, os.environ.get("SLURM_JOB_ID")

    def boom():
        raise ValueError("expected failure")

    ex = _executor(slurm_cluster, tmp_path / "submitit")
    job = ex.submit(add, 2, 3)
    bad = ex.submit(boom)
    _wait(slurm_cluster, [job, bad])
    value, job_id = job.result()
    assert value == 5
    assert job_id == job.job_id
    with pytest.raises(submitit.core.utils.FailedJobError, match="expected failure"):
        bad.result()
    if slurm_cluster.accounting:
        assert _sacct_state(slurm_cluster, job) == "COMPLETED"
        assert _sacct_state(slurm_cluster, bad) == "FAILED"


def test_submitit_array(slurm_cluster, tmp_path):
    def square(x):
        import os
        return x * x, os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")

    ex = _executor(slurm_cluster, tmp_path / "submitit")
    jobs = ex.map_array(square, [3, 4])
    assert len(jobs) == 2
    _wait(slurm_cluster, jobs)
    results = [j.result() for j in jobs]
    assert [r[0] for r in results] == [9, 16]
    assert {r[1] for r in results} == {jobs[0].job_id.split("_")[0]}   # one array job
    assert sorted(r[2] for r in results) == ["0", "1"]
    if slurm_cluster.accounting:
        assert [_sacct_state(slurm_cluster, j) for j in jobs] == ["COMPLETED", "COMPLETED"]

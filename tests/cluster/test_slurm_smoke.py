"""Smoke test of the localhost SLURM cluster (``slurm_cluster`` fixture, tests/cluster/slurm.sh):
submitit's SlurmExecutor (a single job, a failing job, an array) and Hydra's ``submitit_slurm``
launcher (a two-job multirun)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
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


APP = textwrap.dedent('''
    from pathlib import Path
    import os

    import hydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import DictConfig


    @hydra.main(version_base=None, config_path=".", config_name="config")
    def main(cfg: DictConfig) -> int:
        out = Path(HydraConfig.get().runtime.output_dir) / "result.txt"
        out.write_text(f"x={cfg.x} job={os.environ.get('SLURM_JOB_ID')}\\n")
        return cfg.x * 10


    if __name__ == "__main__":
        main()
''')


def test_hydra_submitit_slurm_launcher(slurm_cluster, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                        reason="hydra-submitit-launcher not installed (pip install hydra-submitit-launcher)")
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "config.yaml").write_text("x: 0\n")
    sweep = tmp_path / "multirun"
    cmd = [sys.executable, "app.py", "-m", "hydra/launcher=submitit_slurm",
           f"hydra.launcher.partition={slurm_cluster.partition}", "hydra.launcher.timeout_min=5",
           "hydra.launcher.cpus_per_task=1", f"hydra.sweep.dir={sweep}", "x=1,2"]
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, env=slurm_cluster.env, capture_output=True,
                              text=True, timeout=JOB_WAIT_S)
    except subprocess.TimeoutExpired as e:
        queue = slurm_cluster.run("squeue")
        pytest.fail(f"Hydra multirun did not finish in {JOB_WAIT_S} s\n{e.stdout}\n{e.stderr}\n{queue}\n"
                    + slurm_cluster.logs())
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    texts = sorted((sweep / str(i) / "result.txt").read_text().strip() for i in range(2))
    assert [t.split()[0] for t in texts] == ["x=1", "x=2"]
    assert all(t.split()[1] != "job=None" for t in texts)   # ran inside SLURM jobs

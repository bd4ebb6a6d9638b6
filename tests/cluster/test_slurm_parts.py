"""``launcher=slurm launcher.parts=2`` through the one-node SLURM of this machine
(``slurm_cluster``): the parts run as a SLURM job array submitted by Hydra's submitit
launcher, and the combined, merged result equals the single run of the same rotation sweep
(issue 16: CC >= 0.9995, unique reflections within 0.5 %, the same indexed images)."""

from __future__ import annotations

import pytest

from experiments.scale_out.compare import compare
from tests.launcher.conftest import ROTATION_ARGS, run_process

pytest.importorskip("hydra_plugins.hydra_submitit_launcher",
                    reason="hydra-submitit-launcher not installed")


def test_slurm_parts_equal_the_single_run(slurm_cluster, launcher_data, single_runs):
    d = launcher_data
    prefix = d / "slurm_rot"
    rc, _, err = run_process([str(d / "rot_master.h5"), "-o", str(prefix), *ROTATION_ARGS,
                              "launcher=slurm", "launcher.parts=2",
                              f"launcher.partition={slurm_cluster.partition}",
                              "launcher.cpus_per_task=1", "launcher.time_min=20"])
    assert rc == 0, err + "\n" + slurm_cluster.logs()
    assert "Hydra's submitit_slurm launcher" in err
    f = compare(str(single_runs["rot"]), str(prefix))
    assert f["cc"] >= 0.9995, f
    assert f["unique_rel_diff"] <= 0.005, f
    assert f["indexed_same"], f
    # the parts really were SLURM jobs: submitit's folder holds their logs, and the
    # accounting (when up) lists the array's tasks as completed
    logs = list((d / "slurm_rot_parts" / ".submitit").rglob("*_log.err"))
    assert len(logs) >= 2, logs
    assert any("part 2/2" in p.read_text() for p in logs)
    if slurm_cluster.accounting:
        out = slurm_cluster.run("sacct", "-X", "-n", "-P", "-o", "JobName,State")
        states = [ln.split("|") for ln in out.splitlines() if ln.startswith("jfx")]
        assert len(states) >= 2 and all(s == "COMPLETED" for _, s in states), out


def test_multirun_jobs_on_slurm(slurm_cluster, launcher_data, tmp_path):
    d = launcher_data
    rc, _, err = run_process(["-m", str(d / "st_master.h5"), str(d / "rot_master.h5"),
                              "-o", str(tmp_path / "mr"), "-e", "3", "-X", "none",
                              "launcher=slurm", f"launcher.partition={slurm_cluster.partition}",
                              "launcher.cpus_per_task=1", "launcher.time_min=10"])
    assert rc == 0, err + "\n" + slurm_cluster.logs()
    assert "2 of 2 jobs succeeded" in err
    assert (tmp_path / "mr_job0_process.h5").exists() and (tmp_path / "mr_job1_process.h5").exists()
    logs = list((tmp_path / "mr_multirun" / ".submitit").rglob("*_log.err"))
    assert len(logs) >= 2 and any("jfjoch_process job 1" in p.read_text() for p in logs), logs

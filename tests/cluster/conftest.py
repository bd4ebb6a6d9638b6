"""A real one-node SLURM cluster on localhost for tests (``slurm_cluster`` fixture).

``tests/cluster/slurm.sh start <workdir>`` brings up munged, mariadbd + slurmdbd (so ``sacct``
works), slurmctld and slurmd, all under a temporary work directory; teardown always runs
``slurm.sh stop``. The test skips with the script's reason when SLURM/munge is not installed and
cannot be installed (exit code 3, e.g. not root, or no package repository reachable).

While the tests of this folder run (one cluster for them all), ``SLURM_CONF`` is set in ``os.environ`` (submitit calls
sbatch/sacct/scancel with the process environment); ``cluster.env`` is a full environment for
subprocesses (e.g. a Hydra app with ``hydra/launcher=submitit_slurm``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.launcher.conftest import (  # noqa: F401  (fixtures of the launcher tests)
    _part_env,
    launcher_data,
    part_cache,
    single_runs,
)

SLURM_SH = Path(__file__).resolve().with_name("slurm.sh")


@dataclass
class SlurmCluster:
    workdir: Path
    slurm_conf: Path
    env: dict[str, str] = field(repr=False)   # os.environ + SLURM_CONF, for subprocesses
    partition: str = "debug"
    accounting: bool = False                  # slurmdbd is up: sacct reports job states

    def run(self, *cmd: str, timeout: float = 30) -> str:
        """Run a SLURM client command (squeue, sacct, ...) against this cluster; return stdout."""
        return subprocess.run(cmd, env=self.env, capture_output=True, text=True, check=True,
                              timeout=timeout).stdout

    def logs(self, lines: int = 30) -> str:
        """Tails of the daemons' logs (for failure messages)."""
        out = []
        for f in sorted((self.workdir / "log").glob("*.log")):
            out.append(f"---- {f}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)


@pytest.fixture(scope="package")
def slurm_cluster(tmp_path_factory):
    if shutil.which("bash") is None:
        pytest.skip("SLURM test cluster needs bash")
    workdir = tmp_path_factory.mktemp("slurm")
    own_tmp = None
    if len(str(workdir)) > 60:   # unix socket paths (munge, slurmstepd) must stay short
        workdir = own_tmp = Path(tempfile.mkdtemp(prefix="jfx-slurm-", dir="/tmp"))
    try:
        # generous timeout: the first start on a fresh machine may apt-get install slurm/munge/mariadb
        start = subprocess.run(["bash", str(SLURM_SH), "start", str(workdir)], capture_output=True,
                               text=True, timeout=900, check=False)
        if start.returncode == 3:
            lines = [ln for ln in start.stderr.splitlines() if ln.strip()]
            pytest.skip(lines[-1] if lines else "SLURM not available")
        if start.returncode != 0:
            pytest.fail(f"slurm.sh start failed (exit {start.returncode}):\n{start.stdout}\n{start.stderr}",
                        pytrace=False)
        conf = workdir / "slurm.conf"
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("SLURM_CONF", str(conf))
            yield SlurmCluster(workdir=workdir, slurm_conf=conf, env=dict(os.environ),
                               accounting="accounting_storage/slurmdbd" in conf.read_text())
    finally:
        stop = subprocess.run(["bash", str(SLURM_SH), "stop", str(workdir)], capture_output=True,
                              text=True, timeout=180, check=False)
        if stop.returncode != 0:
            print(f"slurm.sh stop failed (exit {stop.returncode}):\n{stop.stdout}\n{stop.stderr}")
        if own_tmp is not None:
            shutil.rmtree(own_tmp, ignore_errors=True)

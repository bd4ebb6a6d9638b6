"""``jfjoch_process -m``: a Hydra multirun of whole jobs over several master files and a
sweep of option values, each job with its own output prefix, then ``jfjoch_scale`` over the
chosen runs; bad input in any job is refused before the first job starts."""

from __future__ import annotations

import h5py
import numpy as np

from jfx.cli import scale_main
from tests.launcher.conftest import run_process


def test_multirun_over_masters_and_a_sweep(launcher_data, tmp_path):
    d = launcher_data
    rc, _, err = run_process(["-m", str(d / "st_master.h5"), str(d / "rot_master.h5"),
                              "-o", str(tmp_path / "mr"), "-e", "3", "-X", "none",
                              "spotfind.sigma=3,4"])
    assert rc == 0, err
    assert "4 of 4 jobs succeeded" in err
    seen = set()
    for k in range(4):
        path = tmp_path / f"mr_job{k}_process.h5"
        with h5py.File(path) as f:
            cfg = f["/entry/jfx/config"][()].decode()
            n = len(f["/entry/MX/imageNumber"])
        inp = "st_master" if "st_master" in cfg else "rot_master"
        sigma = next(ln.split(":")[1].strip() for ln in cfg.split("spotfind:")[1].splitlines()
                 if ln.strip().startswith("sigma:")).removesuffix(".0")
        seen.add((inp, sigma))
        assert n == 4
        assert f"job {k} [" in err
    assert seen == {(i, s) for i in ("st_master", "rot_master") for s in ("3", "4")}


def test_multirun_jobs_merge_with_jfjoch_scale(launcher_data, tmp_path, capsys):
    d = launcher_data
    rc, _, err = run_process(["-m", str(d / "st_master.h5"), "-o", str(tmp_path / "j"),
                              "-S", "96", "-r", "orientation", "-e", "7",
                              "integrate.n_sigma=3,4"])
    assert rc == 0, err
    runs = [str(tmp_path / f"j_job{k}_process.h5") for k in (0, 1)]
    assert scale_main([*runs, "-o", str(tmp_path / "merged"), "-S", "96"]) == 0
    capsys.readouterr()
    assert (tmp_path / "merged.mtz").exists()


def test_multirun_refuses_bad_input_before_any_job(launcher_data, tmp_path):
    d = launcher_data
    rc, _, err = run_process(["-m", str(d / "st_master.h5"), str(tmp_path / "nope.h5"),
                              "-o", str(tmp_path / "bad"), "-X", "none"])
    assert rc == 2 and "no such file" in err and "Traceback" not in err
    assert not list(tmp_path.glob("bad_job*"))
    rc, _, err = run_process(["-m", str(d / "st_master.h5"), "-o", str(tmp_path / "bad"),
                              "launcher=local", "launcher.parts=2"])
    assert rc == 2 and "launcher.parts" in err
    assert np.all([not p.exists() for p in tmp_path.glob("bad*")])

"""``launcher=local launcher.parts=N``: a run split into parts run by Hydra's joblib launcher
(separate processes), combined and merged once, against the single run of the same data
(issue 16: CC of the merged intensities >= 0.9995, the same unique reflections within 0.5 %,
the same indexed images); a failed part, resume, and the plan of the parts."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.scale_out.compare import compare
from jfx.pipeline.parts import plan_parts
from tests.launcher.conftest import ROTATION_ARGS, STILLS_ARGS, run_process


def test_plan_splits_contiguously_with_margins():
    idx = np.arange(10, 30, 2)  # 10 images, stride 2
    parts = plan_parts(idx, 3, margin=2)
    assert [len(p.own) for p in parts] == [3, 4, 3]
    assert np.array_equal(np.concatenate([p.own for p in parts]), idx)
    assert np.array_equal(parts[0].read, idx[:5])  # no images before the first
    assert np.array_equal(parts[1].read, idx[1:9])
    assert np.array_equal(parts[2].read, idx[5:])
    assert parts[1].label == "images 16-22"
    assert all(np.array_equal(p.own, p.read) for p in plan_parts(idx, 2))  # stills: no margin
    with pytest.raises(ValueError, match="more than the 10 selected images"):
        plan_parts(idx, 11)


def _parts(data, name, args, tag, *extra):
    prefix = data / f"{tag}_{name}"
    rc, out, err = run_process([str(data / f"{name}_master.h5"), "-o", str(prefix), *args,
                                "launcher=local", "launcher.parts=2", *extra])
    return rc, prefix, out, err


@pytest.mark.parametrize("name", ["st", "rot"])
def test_two_local_parts_equal_the_single_run(launcher_data, single_runs, name):
    args = STILLS_ARGS if name == "st" else ROTATION_ARGS
    rc, prefix, _out, err = _parts(launcher_data, name, args, "p2")
    assert rc == 0, err
    f = compare(str(single_runs[name]), str(prefix))
    assert f["cc"] >= 0.9995, f
    assert f["unique_rel_diff"] <= 0.005, f
    assert f["indexed_same"], f
    # both parts ran in other processes and wrote their own file; the combined file has all
    for k in (0, 1):
        assert (launcher_data / f"p2_{name}_part{k}_process.h5").exists()
    assert "parts finished" in err and "wrote " in err
    assert "part 1/2 (images 0-" not in err  # no failure lines
    from jfx.io.process_h5 import read_process_h5

    single = read_process_h5(f"{single_runs[name]}_process.h5")
    both = read_process_h5(f"{prefix}_process.h5")
    assert np.array_equal(both.groups["MX"]["imageNumber"], single.groups["MX"]["imageNumber"])
    if name == "rot":  # the lattice was found once: one first pass before the parts
        assert "rotation first pass: lattice found once" in err
        assert abs(both.reflections.n - single.reflections.n) <= 0.005 * single.reflections.n


def test_failed_part_is_named_and_resume_reuses_the_rest(launcher_data, single_runs):
    import shutil

    from tests.faults.test_corrupt_data import _flip_block0_size

    d = launcher_data
    data2 = d / "st_data_000002.h5"  # images 8-15: the second part
    keep = d / "st_data_000002.h5.orig"
    shutil.copy2(data2, keep)
    strict = ["general.max_unreadable_fraction=0"]  # an unreadable image stops its part
    try:
        _flip_block0_size(data2, 3)  # image 11 unreadable
        rc, prefix, _, err = _parts(d, "st", STILLS_ARGS, "fail", *strict)
    finally:
        shutil.copy2(keep, data2)
    assert rc == 1, err
    assert "part 2/2 (images 8-15)" in err and "image 11" in err
    assert "no merged output written" in err and "Traceback" not in err
    assert not (d / "fail_st.mtz").exists() and not (d / "fail_st_process.h5").exists()
    assert (d / "fail_st_part0_process.h5").exists()
    # the data repaired: part 1 is reused, part 2 runs, the result is the single run's
    rc, prefix, _, err = _parts(d, "st", STILLS_ARGS, "fail", *strict, "launcher.resume=true")
    assert rc == 0, err
    assert "part 1/2 (images 0-7): finished before, reused" in err
    assert "launching 1 part(s)" in err
    f = compare(str(single_runs["st"]), str(prefix))
    assert f["cc"] >= 0.9995 and f["indexed_same"], f


def test_resume_fingerprint_follows_what_changes_results(launcher_data):
    from jfx import config as jcfg
    from jfx.launcher.multirun import fingerprint

    master = str(launcher_data / "st_master.h5")
    base = ["launcher=local", "launcher.parts=2", "launcher.part=0"]

    def fp(*extra):
        return fingerprint(jcfg.compose("process", base + list(extra)), master)

    assert fp() == fp("general.verbose=true", "launcher.resume=true", "launcher.part=1")
    assert fp() == fp("launcher=slurm", "launcher.parts=2")  # where it runs: same results
    assert fp() != fp("integrate.n_sigma=3.5")
    assert fp() != fp("launcher.parts=3", "launcher.part=0")
    assert fp() != fingerprint(jcfg.compose("process", base), str(launcher_data / "rot_master.h5"))


def test_combine_fills_a_field_only_some_parts_have():
    from jfx.models.images import ImageStats
    from jfx.pipeline.parts import _cat

    def stats(numbers, unreadable):
        n = len(numbers)
        return ImageStats(number=np.asarray(numbers), max=np.zeros(n, np.int64),
                          mean=np.zeros(n), n_masked=np.zeros(n, np.int64),
                          n_saturated=np.zeros(n, np.int64), unreadable=unreadable)

    both = _cat([stats([0, 1, 2], None), stats([3, 4], np.array([0, 1], np.uint8))])
    assert np.array_equal(both.number, np.arange(5))
    assert np.array_equal(np.asarray(both.unreadable, bool), [0, 0, 0, 0, 1])

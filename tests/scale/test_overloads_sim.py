"""Overloads on a jfx.sim sweep whose strongest reflections saturate pixels (issue 11 item 4):
the reflections flagged OVERLOADED are exactly those with a saturated pixel within the
signal radius of their true position, and the merge leaves them out unless
``--include-overloads``."""

from __future__ import annotations

import contextlib
import io

import h5py
import numpy as np
import pytest

from jfx.cli import process_main, scale_main
from jfx.io.nxmx import open_master
from jfx.io.truth import read_truth
from jfx.models.reflections import ReflectionFlag as F
from jfx.sim.cli import main as simulate_main
from jfx.symmetry.asu import asu_map

SATURATION = 1500


@pytest.fixture(scope="module")
def saturated(tmp_path_factory):
    d = tmp_path_factory.mktemp("overloads")
    assert simulate_main(["--preset", "lyso_rotation", "-o", str(d / "r"), "--n-images", "16",
                          "-q", "--set", "mean_photons=400",
                          f"saturation_value={SATURATION}"]) == 0
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        assert process_main([str(d / "r_master.h5"), "-o", str(d / "m"), "-R=10", "-S", "96",
                             "-M", "-P", "rot"]) == 0
    return d, buf.getvalue()


def _asu_set(hkl):
    return {tuple(h) for h in asu_map(np.asarray(hkl, np.int64).reshape(-1, 3), 96).asu_hkl}


def _truth_saturated(d) -> set:
    """ASU reflections with a pixel at the saturation value within 3 px (the signal radius) of
    a true spot centre on its image (from the frames and the truth file, not the pipeline)."""
    ob = read_truth(d / "r_truth.h5").observations
    m = open_master(d / "r_master.h5")
    assert m.saturation_value == SATURATION
    hit = np.zeros(len(ob["h"]), bool)
    for idx, frames in m.iter_chunks(np.arange(m.n_images), chunk_size=4):
        for i, fr in zip(idx, frames):
            ys, xs = np.nonzero(fr >= SATURATION)
            for r in np.flatnonzero(ob["image"] == i):
                hit[r] = np.any((xs - ob["x"][r]) ** 2 + (ys - ob["y"][r]) ** 2 < 9.0)
    return _asu_set(np.stack([ob["h"], ob["k"], ob["l"]], 1)[hit])


def _cc_truth(mtz, truth_path):
    import gemmi

    mt = gemmi.read_mtz_file(str(mtz))
    hkl = np.asarray(mt.make_miller_array())
    I = np.asarray(mt.column_with_label("IMEAN").array)
    with h5py.File(truth_path) as f:
        g = f["merged"]
        lut = {tuple(h): t for h, t in zip(np.stack([g["h"][()], g["k"][()], g["l"][()]], 1),
                                          g["i_true"][()])}
    t = np.array([lut.get(tuple(h), np.nan) for h in hkl])
    ok = np.isfinite(t) & np.isfinite(I)
    return np.corrcoef(I[ok], t[ok])[0, 1]


def test_flagged_overloads_are_the_saturated_reflections(saturated):
    d, out = saturated
    with h5py.File(d / "m_process.h5") as f:
        g = f["entry/reflections"]
        hkl = np.stack([g["h"][()], g["k"][()], g["l"][()]], 1)
        fl = g["flags"][()]
        n_over_file = int(f["entry/scaling/n_overloaded"][()])
    integ = (fl & np.uint32(int(F.INTEGRATED_SUM))) != 0
    over = integ & ((fl & np.uint32(int(F.OVERLOADED))) != 0)
    truth = _truth_saturated(d) & _asu_set(hkl[integ])
    assert len(truth) >= 20
    assert _asu_set(hkl[over]) == truth
    assert n_over_file == int(over.sum())
    assert f"{int(over.sum())} overloaded observations left out" in out
    assert f"{int(over.sum())} overloaded," in out  # the integration summary


def test_overloads_out_of_the_merge_by_default(saturated, tmp_path):
    # summation intensities (a saturated core is missing from the sum; profile fitting
    # extrapolates it from the wings of these exactly Gaussian simulated spots) and
    # --min-partiality 0.1 (reflections recorded only as a sliver at the ends of this 8°
    # sweep, recorded fraction 0.02-0.1, have an ill-determined I/F)
    d, _ = saturated
    cc = {}
    for name, extra in (("default", []), ("inc", ["--include-overloads"])):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            assert scale_main([str(d / "m_process.h5"), "-o", str(tmp_path / name), "-S", "96",
                               "-P", "rot", "--min-partiality", "0.1", *extra,
                               "scale.intensity=sum"]) == 0
        assert ("overloaded observations included" in buf.getvalue()) == bool(extra)
        cc[name] = _cc_truth(tmp_path / f"{name}.mtz", d / "r_truth.h5")
    assert cc["default"] > 0.998
    assert cc["inc"] < cc["default"] - 0.005

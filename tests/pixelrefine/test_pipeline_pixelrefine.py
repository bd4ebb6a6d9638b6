"""``jfjoch_process -r pixelrefine -z REF -M`` end to end on simulated stills, and
``jfjoch_scale`` on its output."""

from __future__ import annotations

import contextlib
import io

import gemmi
import h5py
import numpy as np
import pytest

from jfx.cli import process_main, scale_main
from jfx.sim.cli import main as simulate_main
from tests.mtz_util import write_intensity_mtz


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    """8 lysozyme stills (jfx.sim ``lyso_serial``) and a reference with 30 % log-normal
    error written from the truth."""
    d = tmp_path_factory.mktemp("pixelrefine")
    assert simulate_main(["--preset", "lyso_serial", "-o", str(d / "s"), "--n-images", "8",
                          "-q", "--set", "blank_fraction=0"]) == 0
    with h5py.File(d / "s_truth.h5") as f:
        g = f["merged"]
        hkl = np.stack([g["h"][()], g["k"][()], g["l"][()]], 1)
        it = g["i_true"][()].astype(np.float64)
    rng = np.random.default_rng(3)
    write_intensity_mtz(d / "ref.mtz", hkl, it * np.exp(0.3 * rng.normal(size=len(it))))
    out = d / "o"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = process_main([str(d / "s_master.h5"), "-o", str(out), "-S", "96", "-M",
                           "-r", "pixelrefine", "-z", str(d / "ref.mtz")])
    assert rc == 0
    return d, out, buf.getvalue(), {tuple(h): v for h, v in zip(hkl, it)}


def test_pixelrefine_run_writes_refined_stills(serial):
    d, out, stdout, truth = serial
    with h5py.File(f"{out}_process.h5") as f:
        mx = f["entry/MX"]
        st = mx["pixelrefine_status"][()]
        idx = mx["imageIndexed"][()].astype(bool)
        assert np.all(st[~idx] == -1)
        assert np.sum(st == 0) >= 0.75 * idx.sum() > 0
        mos = mx["pixelrefine_mosaicity_deg"][()][st == 0]
        assert np.all((mos > 0.01) & (mos < 0.5))  # simulated 0.05°
        assert np.all(np.isfinite(mx["pixelrefine_mosaicity_deg_sigma"][()][st == 0]))
        lat = mx["latticeIndexed"][()][st == 0]
        np.testing.assert_allclose(lat, mx["pixelrefine_lattice"][()][st == 0])
        r = f["entry/reflections"]
        p = r["partiality"][()]
        assert len(p) > 100 and np.all((p > 0) & (p <= 1))
        assert np.isfinite(r["int_prf"][()]).mean() > 0.9
    # the merged intensities follow the truth (the reference only drove the model)
    m = gemmi.read_mtz_file(f"{out}.mtz")
    hkl = np.asarray(m.make_miller_array())
    i = np.asarray(m.column_with_label("IMEAN").array)
    asu = gemmi.ReciprocalAsu(gemmi.find_spacegroup_by_number(96))
    ops = gemmi.find_spacegroup_by_number(96).operations()
    t = np.array([truth.get(tuple(asu.to_asu(list(map(int, h)), ops)[0]), np.nan)
                  for h in hkl])
    ok = np.isfinite(t) & np.isfinite(i)
    assert ok.sum() > 200
    assert np.corrcoef(i[ok], t[ok])[0, 1] > 0.9
    assert "pixel refinement:" in stdout and "partiality fixed" in stdout
    assert "drove the pixel refinement" in stdout


def test_jfjoch_scale_keeps_the_refined_partialities(serial, capsys):
    d, out, _, _ = serial
    rc = scale_main([f"{out}_process.h5", "-o", str(d / "again")])
    text = capsys.readouterr()
    assert rc == 0
    assert "fixed for stills refined against the pixels" in text.out + text.err


def test_stills_the_reference_barely_covers_keep_their_spot_model(serial):
    """A reference of 40 reflections: every still is "too few reflections" (status 3),
    keeps its spot-refined lattice, and its rows are still integrated (data, not an
    exception)."""
    d, _, _, truth = serial
    keys = np.array(list(truth))
    hkl = keys[np.argsort(np.abs(keys).sum(1), kind="stable")[:40]]  # low resolution
    write_intensity_mtz(d / "tiny.mtz", hkl, [truth[tuple(h)] for h in hkl])
    out = d / "few"
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        rc = process_main([str(d / "s_master.h5"), "-o", str(out), "-S", "96",
                           "-r", "pixelrefine", "-z", str(d / "tiny.mtz"),
                           "pixelrefine.cycles=1"])
    assert rc == 0, buf.getvalue()[-2000:]
    with h5py.File(f"{out}_process.h5") as f:
        mx = f["entry/MX"]
        st = mx["pixelrefine_status"][()]
        idx = mx["imageIndexed"][()].astype(bool)
        assert idx.sum() > 0 and np.all(st[idx] == 3)
        assert np.all(np.isnan(mx["pixelrefine_mosaicity_deg_sigma"][()][idx]))
        assert np.isfinite(f["entry/reflections/int_sum"][()]).mean() > 0.9
    assert "too few reflections" in buf.getvalue()

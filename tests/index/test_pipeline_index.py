"""jfjoch_process with indexing on simulated Jungfraujoch files (stills and rotation)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from jfx.cli import process_main
from jfx.index.common import orientation_error_deg
from jfx.models.lattice import basis_to_cell
from jfx.sim.cli import main as simulate_main

LYSO = "79.1,79.1,38,90,90,90"


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    d = tmp_path_factory.mktemp("serial")
    assert simulate_main(["--preset", "lyso_serial", "-o", str(d / "s"), "--n-images", "12",
                          "-q"]) == 0
    return d


@pytest.fixture(scope="module")
def rotation(tmp_path_factory):
    d = tmp_path_factory.mktemp("rotation")
    assert simulate_main(["--preset", "lyso_rotation", "-o", str(d / "r"), "--n-images", "16",
                          "-q"]) == 0
    return d


def _truth(d, name):
    with h5py.File(d / f"{name}_truth.h5") as f:
        return {k: f[k][()] for k in ("crystal/basis", "crystal/basis0", "images/is_blank")
                if k in f}


def _mx(path):
    with h5py.File(path) as f:
        return {k: f["entry/MX"][k][()] for k in f["entry/MX"]}


def _ori_err(found, true):
    M = np.rint(found @ np.linalg.inv(true))
    return orientation_error_deg(found, M @ true), M


@pytest.mark.parametrize("args", [["-X", "ffbidx", "-C", LYSO, "-S", "96"],
                                  ["-X", "fftw", "-C", LYSO, "-S", "96"],
                                  ["-X", "fftw"]])
def test_stills_are_indexed_with_the_true_orientation(serial, tmp_path, args, capsys):
    out = tmp_path / "o"
    assert process_main([str(serial / "s_master.h5"), "-o", str(out)] + args) == 0
    err = capsys.readouterr().err
    assert "indexing (" in err and "images indexed" in err
    mx = _mx(f"{out}_process.h5")
    truth = _truth(serial, "s")
    blank = truth["images/is_blank"].astype(bool)
    hits = ~blank & (mx["nPeaks"] >= 15)
    assert hits.sum() >= 5
    assert np.all(mx["imageIndexed"][hits] == 1)
    assert np.all(mx["imageIndexed"][blank] == 0)
    for i in np.flatnonzero(mx["imageIndexed"] == 1):
        found = mx["latticeIndexed"][i].reshape(3, 3).astype(np.float64)
        err_deg, _ = _ori_err(found, truth["crystal/basis"][i])
        assert err_deg < 0.2
        np.testing.assert_allclose(np.sort(basis_to_cell(found)[:3]), [38.0, 79.1, 79.1],
                                   rtol=0.005)
        # most spots of an indexed still are indexed
        assert mx["peakIndexed"][i, :mx["nPeaks"][i]].mean() > 0.6
    assert np.all(np.isnan(mx["latticeIndexed"][mx["imageIndexed"] == 0]))


def test_two_pass_rotation(rotation, tmp_path):
    out = tmp_path / "o"
    assert process_main([str(rotation / "r_master.h5"), "-o", str(out), "-R=10", "-S", "96"]) == 0
    mx = _mx(f"{out}_process.h5")
    truth = _truth(rotation, "r")
    b0 = mx["rotation_lattice"].reshape(3, 3)
    err_deg, _ = _ori_err(b0, truth["crystal/basis0"])
    assert err_deg < 0.05
    np.testing.assert_allclose(basis_to_cell(b0), [79.1, 79.1, 38.0, 90, 90, 90], rtol=0.003)
    assert mx["imageIndexed"].mean() >= 0.99


def test_single_pass_and_forced_lattice(rotation, tmp_path):
    truth = _truth(rotation, "r")
    out = tmp_path / "a"
    assert process_main([str(rotation / "r_master.h5"), "-o", str(out),
                         "--single-pass-rotation=4"]) == 0
    mx = _mx(f"{out}_process.h5")
    assert mx["imageIndexed"].mean() >= 0.99
    err_deg, _ = _ori_err(mx["rotation_lattice"].reshape(3, 3), truth["crystal/basis0"])
    assert err_deg < 0.1
    out = tmp_path / "b"
    lat = ",".join(f"{v:.4f}" for v in truth["crystal/basis0"].reshape(9))
    assert process_main([str(rotation / "r_master.h5"), "-o", str(out),
                         f"--force-rotation-lattice={lat}"]) == 0
    mx = _mx(f"{out}_process.h5")
    np.testing.assert_allclose(mx["rotation_lattice"], truth["crystal/basis0"].reshape(9),
                               atol=1e-3)
    assert mx["imageIndexed"].mean() >= 0.99


def test_rotation_options_on_stills_are_rejected(serial, tmp_path, capsys):
    assert process_main([str(serial / "s_master.h5"), "-o", str(tmp_path / "x"), "-R"]) == 2
    err = capsys.readouterr().err
    assert "needs rotation data" in err and "Traceback" not in err
    assert not list(tmp_path.iterdir())


def test_two_pass_uses_stored_spots_unless_redo(rotation, tmp_path):
    """Pass 1 reads the spots stored in the master's /entry/MX; --redo-rotation-spots uses
    this run's spots instead. The stored spots here are displaced by 40 px (not the
    crystal's), so only the redo run indexes."""
    import shutil

    ref = tmp_path / "ref"
    assert process_main([str(rotation / "r_master.h5"), "-o", str(ref), "-R=10", "-X", "None"]
                        ) == 0
    mx = _mx(f"{ref}_process.h5")
    master = rotation / "r_stored_master.h5"  # same folder: the data links stay valid
    shutil.copy(rotation / "r_master.h5", master)
    with h5py.File(master, "r+") as f:
        g = f.require_group("entry/MX")
        for k in ("nPeaks", "peakXPosRaw", "peakYPosRaw", "peakTotalIntensity"):
            if k in g:
                del g[k]
        g["nPeaks"] = mx["nPeaks"]
        g["peakXPosRaw"] = mx["peakXPosRaw"] + 40.0
        g["peakYPosRaw"] = mx["peakYPosRaw"]
        g["peakTotalIntensity"] = mx["peakTotalIntensity"]
    out = tmp_path / "stored"
    process_main([str(master), "-o", str(out), "-R=10", "-S", "96"])
    stored = _mx(f"{out}_process.h5")
    assert stored["imageIndexed"].mean() < 0.5
    out = tmp_path / "redo"
    assert process_main([str(master), "-o", str(out), "-R=10", "-S", "96",
                         "--redo-rotation-spots"]) == 0
    assert _mx(f"{out}_process.h5")["imageIndexed"].mean() >= 0.99

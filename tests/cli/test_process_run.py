"""End to end: tiny NXmx masters → jfjoch_process -X None → _process.h5 checked against numpy."""

from __future__ import annotations

import os
import shutil
import subprocess

import h5py
import numpy as np
import pytest
from omegaconf import OmegaConf

import jfx
from jfx.azint.settings import AzintSettings
from jfx.cli import process_main
from jfx.io.process_h5 import read_process_h5
from tests.azint.test_azint import numpy_reference
from tests.cli.conftest import SATURATION, numpy_stats


def check_mx_azint(out_path, frames, mask, geo, numbers, settings=None):
    """/entry/MX is self-consistent; /entry/azint equals an independent numpy computation."""
    settings = settings or AzintSettings()
    n = len(numbers)
    with h5py.File(out_path, "r") as f:
        mx = {k: v[()] for k, v in f["entry/MX"].items()}
        az = {k: v[()] for k, v in f["entry/azint"].items()} if "azint" in f["entry"] else None
    np.testing.assert_array_equal(mx["imageNumber"], numbers)
    max_spots = mx["peakXPosRaw"].shape[1]
    for key, dt, shape in (("nPeaks", np.int32, (n,)), ("peakXPosRaw", np.float32, (n, max_spots)),
                           ("peakYPosRaw", np.float32, (n, max_spots)),
                           ("peakTotalIntensity", np.float32, (n, max_spots)),
                           ("peakIndexed", np.uint8, (n, max_spots)),
                           ("strongPixels", np.int32, (n,)), ("imageIndexed", np.uint8, (n,)),
                           ("latticeIndexed", np.float32, (n, 9)),
                           ("bkgEstimate", np.float32, (n,)),
                           ("resolutionEstimate", np.float32, (n,)),
                           ("nPeaksIceRing", np.int32, (n,)), ("nPeaksFound", np.int32, (n,))):
        assert mx[key].dtype == dt and mx[key].shape == shape, key
    # nPeaks = number of non-NaN slots, which come first; padding is NaN in all three arrays
    filled = ~np.isnan(mx["peakXPosRaw"])
    np.testing.assert_array_equal(filled.sum(axis=1), mx["nPeaks"])
    np.testing.assert_array_equal(filled, ~np.isnan(mx["peakYPosRaw"]))
    np.testing.assert_array_equal(filled, ~np.isnan(mx["peakTotalIntensity"]))
    assert all(filled[i, :c].all() for i, c in enumerate(mx["nPeaks"]))
    assert np.all(mx["nPeaks"] <= np.minimum(mx["nPeaksFound"], max_spots))
    assert np.all(mx["nPeaksIceRing"] <= mx["nPeaks"])
    assert np.all(mx["strongPixels"] >= 0) and np.all(mx["peakIndexed"] == 0)
    assert np.all(mx["imageIndexed"] == 0) and np.all(np.isnan(mx["latticeIndexed"]))
    assert np.all(mx["peakXPosRaw"][filled] >= -0.5) and np.all(
        mx["peakXPosRaw"][filled] <= frames.shape[2] - 0.5)
    # background estimate: finite, within the valid pixel range of each image
    valid_vals = [fr[~mask] for fr in frames[numbers]]
    assert np.all(mx["bkgEstimate"] <= [v.max() for v in valid_vals])
    assert np.all(mx["bkgEstimate"] >= 0)
    if not settings.enabled:
        assert az is None
        return mx, None
    exp, q = numpy_reference(frames[numbers].astype(np.float64), geo, mask, settings, err=None,
                             sat=SATURATION)
    np.testing.assert_allclose(az["bin_to_q"], q, rtol=1e-6)
    assert az["bin_to_q"].dtype == np.float32 and az["image"].dtype == np.float32
    assert az["image"].shape == (n, len(q))
    np.testing.assert_allclose(az["image"], exp, rtol=1e-5, equal_nan=True)
    if settings.n_azimuthal_bins:
        assert az["image_2d"].shape == (n, settings.n_azimuthal_bins, len(q))
        assert az["bin_to_azimuth_deg"].shape == (settings.n_azimuthal_bins,)
    else:
        assert "image_2d" not in az
    return mx, az


def check_output(out_path, master, frames, mask, geo, numbers):
    pf = read_process_h5(out_path)
    np.testing.assert_array_equal(pf.image.number, numbers)
    exp_max, exp_mean, exp_masked, exp_sat = numpy_stats(frames[numbers], mask, SATURATION)
    np.testing.assert_array_equal(pf.image.max, exp_max)
    np.testing.assert_array_equal(pf.image.mean, exp_mean)
    np.testing.assert_array_equal(pf.image.n_masked, exp_masked)
    np.testing.assert_array_equal(pf.image.n_saturated, exp_sat)
    assert pf.image.mean.dtype == np.float32 and pf.image.max.dtype == np.int64
    np.testing.assert_allclose(pf.beam_center_px, np.asarray(geo.detector.beam_center_px))
    assert pf.detector_distance_m == pytest.approx(float(geo.detector.distance_mm) * 1e-3)
    assert pf.wavelength_A == pytest.approx(float(geo.beam.wavelength_A))
    assert pf.version == jfx.__version__
    assert pf.input == str(master.resolve())
    cfg = OmegaConf.create(pf.config_yaml)
    assert cfg.index._target_ == "jfx.index.settings.NoIndexing"
    with h5py.File(out_path, "r") as f:
        assert f["entry/definition"][()] == b"NXmx"
        np.testing.assert_array_equal(f["entry/MX/imageNumber"][()], numbers)
        assert f["entry/MX/imageNumber"].dtype == np.int64
        assert "data" not in f["entry"]
        if geo.goniometer is not None:
            np.testing.assert_allclose(f["entry/sample/transformations/omega"][:2], [10.0, 10.5])
    return pf


@pytest.mark.parametrize("layout,rotation,dtype,codec", [
    ("legacy", True, "int32", "bslz4"),
    ("legacy", False, "uint32", "bszstd"),
    ("vds", True, "int16", "bslz4"),
    ("vds", False, "uint16", "bslz4"),
    ("single", True, "int16", "bszstd"),
    ("single", False, "int32", "none"),
])
def test_process_none_end_to_end(tmp_path, master_factory, capsys, layout, rotation, dtype, codec):
    master, frames, mask, geo = master_factory(layout=layout, rotation=rotation, dtype=dtype,
                                               codec=codec)
    out = tmp_path / "res" / "out"
    rc = process_main([str(master), "-o", str(out), "-X", "None", "-s", "1", "-e", "3", "-t", "2"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "spot finding + azimuthal integration: 2 frames" in err and "frames/s" in err
    assert "spots/image" in err and "median resolution estimate" in err
    check_output(tmp_path / "res" / "out_process.h5", master, frames, mask, geo, np.array([1, 3]))
    check_mx_azint(tmp_path / "res" / "out_process.h5", frames, mask, geo, np.array([1, 3]))
    assert sorted(p.name for p in (tmp_path / "res").iterdir()) == ["out_process.h5"]


def test_all_images_threads_and_end_clipped(tmp_path, master_factory, capsys):
    master, frames, mask, geo = master_factory(n_images=7)
    out = tmp_path / "o"
    rc = process_main([str(master), "-o", str(out), "-X", "none", "-N", "2", "-e", "99", "-v"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "end image 99 is beyond the data; clipped to 6" in err
    assert "override general.threads: 1 -> 2" in err  # -v shows overrides vs defaults
    assert "geometry:" in err and "time per part:" in err and "q bins" in err
    check_output(tmp_path / "o_process.h5", master, frames, mask, geo, np.arange(7))
    check_mx_azint(tmp_path / "o_process.h5", frames, mask, geo, np.arange(7))


def test_batch_size_does_not_change_results(tmp_path, master_factory, capsys):
    master, frames, mask, geo = master_factory(n_images=5)
    outs = []
    for b in (1, 3):
        out = tmp_path / f"b{b}"
        rc = process_main([str(master), "-o", str(out), "-X", "None", f"general.batch_size={b}",
                           "general.device=cpu"])
        assert rc == 0, capsys.readouterr().err
        with h5py.File(f"{out}_process.h5", "r") as f:
            outs.append({g: {k: v[()] for k, v in f[f"entry/{g}"].items()}
                         for g in ("MX", "azint", "image")})
    for g in outs[0]:
        for k in outs[0][g]:
            np.testing.assert_array_equal(outs[0][g][k], outs[1][g][k], err_msg=f"{g}/{k}")


def test_azint_options_2d_and_disabled(tmp_path, master_factory, capsys):
    master, frames, mask, geo = master_factory(n_images=4, rotation=False)
    st = AzintSettings(q_spacing_invA=0.01, low_q_invA=0.005, n_azimuthal_bins=4,
                       polarization=False)
    rc = process_main([str(master), "-o", str(tmp_path / "a"), "-X", "None",
                       "azint.q_spacing_invA=0.01", "azint.low_q_invA=0.005",
                       "azint.n_azimuthal_bins=4", "azint.polarization=false"])
    assert rc == 0, capsys.readouterr().err
    _, az = check_mx_azint(tmp_path / "a_process.h5", frames, mask, geo, np.arange(4), st)
    np.testing.assert_allclose(az["bin_to_azimuth_deg"], [45, 135, 225, 315])
    rc = process_main([str(master), "-o", str(tmp_path / "b"), "-X", "None",
                       "azint.enabled=false"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "spot finding: 4 frames" in err
    check_mx_azint(tmp_path / "b_process.h5", frames, mask, geo, np.arange(4),
                   AzintSettings(enabled=False))


def test_start_beyond_data_is_an_error(tmp_path, shared_master, capsys):
    master = shared_master[0]
    rc = process_main([str(master), "-o", str(tmp_path / "o"), "-X", "None", "-s", "5"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip() == "jfjoch_process: error: start image 5 is beyond the data (images 0-4)"
    assert not list(tmp_path.iterdir())


def test_existing_output_is_replaced(tmp_path, shared_master, capsys):
    master, frames, mask, geo = shared_master
    (tmp_path / "o_process.h5").write_bytes(b"old")
    assert process_main([str(master), "-o", str(tmp_path / "o"), "-X", "None", "-e", "0"]) == 0
    check_output(tmp_path / "o_process.h5", master, frames, mask, geo, np.array([0]))


@pytest.mark.parametrize("argv,needle", [
    (["-X", "None", "-M"], "needs indexing and integration"),
    (["-M", "integrate.enabled=false"], "needs indexing and integration"),
])
def test_impossible_stages_stop_before_reading(tmp_path, shared_master, capsys, argv, needle):
    rc = process_main([str(shared_master[0]), "-o", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert rc == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_pixelrefine_on_rotation_sweep_is_refused_before_reading(tmp_path, shared_master,
                                                                  capsys):
    """-r pixelrefine refines stills: with -R it stops with one line before any image."""
    from tests.mtz_util import write_intensity_mtz

    mtz = tmp_path / "ref.mtz"
    write_intensity_mtz(mtz, [[1, 2, 3]], [100.0], 1, (50, 60, 70, 90, 90, 90))
    rc = process_main([str(shared_master[0]), "-o", str(tmp_path / "o"), "-R",
                       "-r", "pixelrefine", "-z", str(mtz)])
    err = capsys.readouterr().err
    assert rc == 2
    assert "refines still images" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.mtz"]


def test_interrupt_processing_error_and_unexpected(tmp_path, shared_master, capsys, monkeypatch):
    import jfx.spotfind.find as find
    from jfx.io.errors import ProcessingError

    import jfx.io.process_h5 as process_h5

    argv = [str(shared_master[0]), "-o", str(tmp_path / "o"), "-X", "None", "-e", "2"]
    for exc, code, text in ((KeyboardInterrupt(), 130, "interrupted"),
                            (ProcessingError("image statistics: image 3: boom"), 1,
                             "image 3: boom"),
                            (RuntimeError("kaput"), 1,
                             "spot finding failed on images 0-2: RuntimeError: kaput")):
        def boom(*a, _exc=exc, **k):
            raise _exc
        monkeypatch.setattr(find.ThresholdSpotFinder, "__call__", boom)
        assert process_main(argv) == code
        err = capsys.readouterr().err
        assert text in err and "Traceback" not in err
        assert len([ln for ln in err.splitlines() if "error" in ln]) == 1
        assert not list(tmp_path.iterdir())
    monkeypatch.undo()

    def broken_writer(*a, **k):
        raise RuntimeError("writer kaput")
    monkeypatch.setattr(process_h5, "write_process_h5", broken_writer)
    assert process_main(argv) == 1
    err = capsys.readouterr().err
    assert "jfjoch_process: error: unexpected RuntimeError: writer kaput" in err
    assert "Traceback" not in err
    assert process_main(argv + ["-v"]) == 1
    assert "Traceback" in capsys.readouterr().err  # full traceback only with -v


def test_console_script_subprocess(tmp_path, shared_master):
    exe = shutil.which("jfjoch_process")
    if exe is None:
        pytest.skip("jfjoch_process console script not installed")
    master = shared_master[0]
    env = dict(os.environ, JFX_CACHE_DIR=str(tmp_path / "cache"))
    r = subprocess.run([exe, str(master), "-o", str(tmp_path / "sub"), "-X", "None", "-e", "1"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "wrote" in r.stderr
    pf = read_process_h5(tmp_path / "sub_process.h5")
    np.testing.assert_array_equal(pf.image.number, [0, 1])
    assert any((tmp_path / "cache").iterdir())  # persistent compilation cache was used
    r = subprocess.run([exe, str(tmp_path / "missing.h5"), "-X", "None"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip().startswith("jfjoch_process: error:")

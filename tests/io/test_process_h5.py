"""_process.h5 writer/reader: layout per FORMATS.md, geometry round trip, atomicity."""

from __future__ import annotations

import shutil

import h5py
import numpy as np
import pytest

from jfx.io.errors import InputError
from jfx.io.jfjoch_writer import write_jungfraujoch
from jfx.io.nxmx import open_master
from jfx.io.process_h5 import (process_h5_path, read_process_h5, write_process_groups,
                                write_process_h5)
from jfx.models.geometry import Beam, Detector, Geometry, Goniometer
from jfx.models.images import ImageStats


SHAPE = (16, 20)


@pytest.fixture
def master(tmp_path):
    geo = Geometry(Beam.create(1.1), Detector.create(150.0, (9.5, 7.25), SHAPE),
                   Goniometer.create((1.0, 0.0, 0.0), 0.0, 0.2))
    frames = np.ones((3,) + SHAPE, dtype=np.int32)
    return write_jungfraujoch(tmp_path / "in" / "m", frames, n_images=3, geometry=geo,
                              layout="legacy"), geo


def stats():
    return ImageStats(np.array([0, 2]), [5, 9], [1.25, np.nan], [3, 320], [0, 1])


def used_geometry():
    """A 'refined' geometry different from the master's (tilted detector axes included)."""
    c, s = np.cos(0.1), np.sin(0.1)
    det = Detector.create(151.5, (10.25, 6.5), SHAPE, fast_axis=(c, 0.0, -s), slow_axis=(0, 1, 0))
    return Geometry(Beam.create(1.0995), det, Goniometer.create((1.0, 0.0, 0.0), 0.0, 0.2))


def test_layout_and_dtypes(tmp_path, master):
    mpath, _ = master
    out = write_process_groups(process_h5_path(tmp_path / "o"), master_path=mpath,
                           geometry=used_geometry(), config_yaml="a: 1\n", version="9.9",
                           image=stats(),
                           groups={"reflections": {"h": [1, 2], "k": [0, 0], "l": [3, 4],
                                                   "int_sum": [1.0, 2.0], "flags": [1, 0]},
                                   "MX": {"nPeaks": [4, 5], "nPeaksIceRing": [1, 0],
                                          "nPeaksFound": [4.0, 300.0],
                                          "bkgEstimate": np.array([0.5, 1.5])},
                                   "azint": {"bin_to_q": np.array([0.01, 0.03]),
                                             "image": np.array([[1.0, np.nan], [2.0, 3.0]]),
                                             "bin_to_azimuth_deg": [90.0, 270.0]},
                                   "scaling": {"scale": [1.0, 1.1]}})
    assert out == tmp_path / "o_process.h5"
    with h5py.File(out, "r") as f:
        e = f["entry"]
        assert e.attrs["NX_class"] == "NXentry" and e["definition"][()] == b"NXmx"
        assert e["instrument"].attrs["NX_class"] == "NXinstrument"
        assert "sample" in e and "source" in e and "data" not in e
        assert "data" not in e["instrument/detector"]  # the link to the images is not copied
        assert e["image/number"].dtype == np.int64 and e["image/mean"].dtype == np.float32
        assert e["image/n_masked"].dtype == np.int64 and e["image/n_saturated"].dtype == np.int64
        np.testing.assert_array_equal(e["MX/imageNumber"][()], [0, 2])
        assert e["MX/nPeaks"].dtype == np.int32
        assert e["MX/nPeaksIceRing"].dtype == np.int32 and e["MX/nPeaksFound"].dtype == np.int32
        np.testing.assert_array_equal(e["MX/nPeaksFound"][()], [4, 300])
        assert e["MX/bkgEstimate"].dtype == np.float32
        assert e["azint"].attrs["NX_class"] == "NXcollection"
        for k in ("bin_to_q", "image", "bin_to_azimuth_deg"):
            assert e[f"azint/{k}"].dtype == np.float32, k
        assert np.isnan(e["azint/image"][0, 1]) and e["azint/image"][1, 1] == 3.0
        assert e["reflections"].attrs["NX_class"] == "NXreflections"
        assert e["reflections/h"].dtype == np.int32 and e["reflections/flags"].dtype == np.uint32
        assert e["reflections/int_sum"].dtype == np.float32
        assert e["scaling/scale"].dtype == np.float32
        assert e["jfx/config"][()] == b"a: 1\n" and e["jfx/version"][()] == b"9.9"
        np.testing.assert_allclose(e["sample/transformations/omega"][()], [0.0, 0.2, 0.4])
    pf = read_process_h5(out)
    np.testing.assert_array_equal(pf.image.max, [5, 9])
    assert np.isnan(pf.image.mean[1])
    assert pf.groups["reflections"]["l"].tolist() == [3, 4]
    assert not pf.has_reflections  # lacks columns jfjoch_scale needs: not usable
    assert pf.input == str(mpath.resolve())


def test_geometry_round_trips_through_the_nxmx_reader(tmp_path, master):
    """The geometry written (values + transformations) is what the NXmx reader derives."""
    mpath, _ = master
    geo = used_geometry()
    out = write_process_groups(tmp_path / "o_process.h5", master_path=mpath, geometry=geo,
                           config_yaml="", version="0", image=stats())
    probe = tmp_path / "probe_master.h5"
    shutil.copy(out, probe)
    with h5py.File(probe, "r+") as f:  # give the reader an image stack to open
        f["entry/data/data"] = np.zeros((3,) + SHAPE, dtype=np.int32)
    with open_master(probe) as m:
        got = m.geometry
    np.testing.assert_allclose(float(got.beam.wavelength_A), 1.0995)
    np.testing.assert_allclose(float(got.detector.distance_mm), 151.5, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(got.detector.beam_center_px), [10.25, 6.5], atol=1e-9)
    np.testing.assert_allclose(np.asarray(got.detector.fast_axis),
                               np.asarray(geo.detector.fast_axis), atol=1e-12)
    np.testing.assert_allclose(np.asarray(got.detector.slow_axis), [0, 1, 0], atol=1e-12)
    pf = read_process_h5(out)
    assert pf.beam_center_px == (10.25, 6.5)
    assert pf.detector_distance_m == pytest.approx(0.1515)


@pytest.mark.parametrize("exc", [RuntimeError("injected"), KeyboardInterrupt()])
def test_failure_after_temp_file_leaves_no_output(tmp_path, master, exc):
    mpath, geo = master
    out_dir = tmp_path / "res"
    out_dir.mkdir()
    seen = []

    def fail(f):
        seen.append(f.driver)
        raise exc

    with pytest.raises(type(exc)):
        write_process_groups(out_dir / "o_process.h5", master_path=mpath, geometry=geo,
                         config_yaml="", version="0", image=stats(), _after_create=fail)
    assert seen == ["fileobj"]  # built in memory (HDF5 never writes to the disk)
    assert list(out_dir.iterdir()) == []


def test_failure_keeps_previous_output(tmp_path, master):
    mpath, geo = master
    final = tmp_path / "o_process.h5"
    final.write_bytes(b"previous")

    def fail(f):
        raise OSError("disk full")

    with pytest.raises(OSError):
        write_process_groups(final, master_path=mpath, geometry=geo, config_yaml="", version="0",
                         image=stats(), _after_create=fail)
    assert final.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "o_process.h5"]


def test_unknown_group_is_rejected(tmp_path, master):
    mpath, geo = master
    with pytest.raises(ValueError, match="unknown output group"):
        write_process_groups(tmp_path / "o_process.h5", master_path=mpath, geometry=geo,
                         config_yaml="", version="0", image=stats(), groups={"bogus": {}})
    assert not (tmp_path / "o_process.h5").exists()


def test_reader_errors(tmp_path, master):
    with pytest.raises(InputError, match="no such file"):
        read_process_h5(tmp_path / "missing_process.h5")
    bad = tmp_path / "bad_process.h5"
    bad.write_text("x")
    with pytest.raises(InputError, match="not an HDF5 file"):
        read_process_h5(bad)
    with pytest.raises(InputError, match="not a jfx _process.h5"):
        read_process_h5(master[0])


def test_state_written_and_read_back(tmp_path):
    """write_process_h5(path, state): the pipeline state's spots, statistics and profiles land
    under their FORMATS names (the one name table in io/process_h5.py)."""
    from jfx.config import compose, process_settings
    from jfx.pipeline import process
    from tests.cli.conftest import make_master

    mpath, frames, _, _ = make_master(tmp_path, rotation=False, n_images=4)
    settings = process_settings(compose("process", ["index=none"]))
    with open_master(mpath) as m:
        state = process(settings, m).state
    out = write_process_h5(tmp_path / "s_process.h5", state, master_path=mpath,
                           config_yaml="", version="0")
    pf = read_process_h5(out)
    mx = pf.groups["MX"]
    np.testing.assert_array_equal(mx["nPeaks"], np.asarray(state.spots.valid).sum(1))
    np.testing.assert_array_equal(mx["imageNumber"], [0, 1, 2, 3])
    np.testing.assert_array_equal(pf.image.max, state.image_stats.max)
    np.testing.assert_array_equal(pf.groups["azint"]["image"], state.azint.profile)
    assert not mx["imageIndexed"].any() and pf.reflections is None


def test_scaling_statistics_with_anomalous_columns_and_older_files(tmp_path, master):
    """/entry/scaling/statistics carries the anomalous columns under -A (int64 Bijvoet pairs,
    float64 otherwise) and reads back by name; a table written before them (no anomalous
    columns, as older files have) still reads."""
    from jfx.scale.stats import merging_statistics
    from jfx.symmetry.asu import asu_map

    rng = np.random.default_rng(1)
    hkl = rng.integers(-4, 5, (400, 3))
    hkl = hkl[np.any(hkl != 0, axis=1)]
    I = rng.uniform(50.0, 150.0, len(hkl))
    st = merging_statistics(asu_map(hkl, 1, anomalous=True), I, np.full(len(hkl), 2.0), None,
                            np.arange(len(hkl)) % 2, (20.0, 21.0, 22.0, 90, 90, 90), 1,
                            anomalous=True, n_shells=3)
    old = np.zeros(4, dtype=[("d_max", np.float64), ("d_min", np.float64),
                             ("n_obs", np.int64), ("cc_half", np.float64)])
    old["n_obs"] = [1, 2, 3, 6]
    for name, rec in (("new", st.as_records()), ("old", old)):
        out = write_process_groups(process_h5_path(tmp_path / name), master_path=master[0],
                                   geometry=used_geometry(), config_yaml="", version="0",
                                   image=stats(), groups={"scaling": {"statistics": rec}})
        got = read_process_h5(out).groups["scaling"]["statistics"]
        assert got.dtype.names == rec.dtype.names
        for c in rec.dtype.names:
            np.testing.assert_array_equal(got[c], rec[c])
    new = read_process_h5(process_h5_path(tmp_path / "new")).groups["scaling"]["statistics"]
    assert new.dtype["n_anom_pairs"] == np.int64 and new.dtype["r_anom"] == np.float64
    assert new["n_anom_pairs"][-1] == st.n_anom_pairs[-1] > 0
    np.testing.assert_array_equal(new["dano_over_sigma"], st.dano_over_sigma)


def test_reflection_qe_column_round_trips_and_scaling_divides_by_it():
    """``/entry/reflections/qe`` (sensor detection efficiency) is written and read back; a file
    without it reads as qe = 1; scaling's ``lp`` is lp · qe (one place for the corrections)."""
    import dataclasses

    from jfx.io.process_h5 import _reflection_fields, _reflections
    from jfx.models.reflections import Reflections
    from jfx.scale.observations import reflection_columns

    t = dataclasses.replace(Reflections.empty(3), lp=np.array([2.0, 3.0, 4.0], np.float32),
                            qe=np.array([0.7, 0.8, 0.9], np.float32))
    fields = _reflection_fields(t)
    back, why = _reflections(fields)
    assert why is None
    np.testing.assert_array_equal(back.qe, t.qe)
    np.testing.assert_allclose(reflection_columns(back)["lp"], [1.4, 2.4, 3.6], rtol=1e-6)
    del fields["qe"]
    old, _ = _reflections(fields)
    np.testing.assert_array_equal(old.qe, np.ones(3, np.float32))

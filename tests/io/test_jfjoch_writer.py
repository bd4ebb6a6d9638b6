"""Round trips write_jungfraujoch → open_master over every layout × codec × dtype.

Expectations are the written inputs (frames, mask, metadata) and numpy-computed pixel
positions; the reader re-derives everything from the file's fields and NXtransformations.
"""

from __future__ import annotations

import itertools

import h5py
import numpy as np
import pytest

from jfx.io.jfjoch_writer import write_jungfraujoch
from jfx.io.nxmx import error_value_of, open_master
from jfx.models.spots import StoredSpots
from jfx.physics.diffraction import pixel_to_lab

from .conftest import N_IMG, NX, NY, random_frames, small_geometry

LAYOUTS = ("legacy", "vds", "single")
CODECS = ("bslz4", "bszstd", "none")
DTYPES = ("int16", "int32", "uint16", "uint32")


@pytest.mark.parametrize("layout,codec,dtype", list(itertools.product(LAYOUTS, CODECS, DTYPES)))
def test_round_trip_frames_mask_metadata(make_file, layout, codec, dtype):
    mask = np.zeros((NY, NX), dtype=np.uint32)
    mask[3, :] = 1          # a dead row
    mask[40:44, 60] = 8     # a few pixels with another bit
    cell = (78.9, 79.1, 38.2, 90.0, 90.0, 90.0)
    master, fr = make_file(dtype=dtype, layout=layout, codec=codec, images_per_file=2,
                           pixel_mask=mask, saturation_value=12345, unit_cell=cell,
                           space_group=96, bandwidth_fwhm=0.012)
    err = error_value_of(dtype)
    expected = fr.copy()
    expected[:, mask != 0] = err
    with open_master(master) as m:
        assert m.layout == layout
        assert m.codec == codec
        assert m.dtype == np.dtype(dtype)
        assert m.n_images == N_IMG and m.image_shape == (NY, NX)
        assert m.error_value == err
        got = m.read_frames(range(N_IMG))
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(got, expected)  # bit-identical
        np.testing.assert_array_equal(m.read_frame(3), expected[3])
        np.testing.assert_array_equal(m.pixel_mask, mask != 0)
        inv = m.invalid_mask(got)
        np.testing.assert_array_equal(inv, (mask != 0)[None] | (expected == err))
        assert m.saturation_value == 12345
        assert m.unit_cell == pytest.approx(cell)
        assert m.space_group == 96
        assert m.bandwidth_fwhm == pytest.approx(0.012, rel=1e-12)
        assert m.warnings == []
    if layout != "single":
        assert len(list(master.parent.glob("run_data_*.h5"))) == 3  # 2 + 2 + 1 images


@pytest.mark.parametrize("tilted", [False, True])
def test_round_trip_geometry_rotation(make_file, tilted):
    geom = small_geometry(rotation=True, tilted=tilted)
    master, _ = make_file(geometry=geom, layout="vds")
    with open_master(master) as m:
        g = m.geometry
        assert m.warnings == []
        np.testing.assert_allclose(g.detector.beam_center_px, geom.detector.beam_center_px,
                                   atol=1e-9)
        assert float(g.detector.distance_mm) == pytest.approx(120.0, abs=1e-9)
        assert g.detector.pixel_size_mm == pytest.approx((0.075, 0.075))
        np.testing.assert_allclose(g.detector.fast_axis, geom.detector.fast_axis, atol=1e-12)
        np.testing.assert_allclose(g.detector.slow_axis, geom.detector.slow_axis, atol=1e-12)
        assert g.detector.sensor_thickness_mm == pytest.approx(0.45)
        assert float(g.beam.wavelength_A) == pytest.approx(0.9795, rel=1e-12)
        assert float(g.beam.polarization_fraction) == pytest.approx(0.97, abs=1e-12)
        np.testing.assert_allclose(g.beam.polarization_axis, (1, 0, 0), atol=1e-12)
        assert g.goniometer is not None
        np.testing.assert_allclose(g.goniometer.axis, (-1, 0, 0), atol=1e-12)
        assert np.rad2deg(float(g.goniometer.start_rad)) == pytest.approx(12.5)
        assert np.rad2deg(float(g.goniometer.increment_rad)) == pytest.approx(0.25)
        np.testing.assert_allclose(m.omega_deg, 12.5 + 0.25 * np.arange(N_IMG))
        # chain-implied position of pixel (x, y) vs the geometry the writer was given
        xs, ys = np.array([0.0, 79.0, 13.5]), np.array([0.0, 63.0, 50.25])
        want = np.asarray(pixel_to_lab(geom.detector, geom.beam, xs, ys))
        got = np.asarray(pixel_to_lab(g.detector, g.beam, xs, ys))
        np.testing.assert_allclose(got, want, atol=1e-9)
        chain = (m.chain_origin_mm[None] + xs[:, None] * 0.075 * np.asarray(g.detector.fast_axis)
                 + ys[:, None] * 0.075 * np.asarray(g.detector.slow_axis))
        np.testing.assert_allclose(chain, want, atol=1e-9)


def test_stills_and_stored_spots(make_file):
    rng = np.random.default_rng(3)
    x = rng.uniform(0, NX, (N_IMG, 7)).astype(np.float32)
    y = rng.uniform(0, NY, (N_IMG, 7)).astype(np.float32)
    inten = rng.uniform(1, 1e4, (N_IMG, 7)).astype(np.float32)
    n = np.array([7, 3, 0, 5, 1], dtype=np.int32)
    for a in (x, y, inten):
        a[np.arange(7)[None, :] >= n[:, None]] = np.nan
    spots = StoredSpots(n_peaks=n, x_px=x, y_px=y, intensity=inten)
    master, _ = make_file(rotation=False, layout="single", stored_spots=spots)
    with open_master(master) as m:
        assert m.geometry.goniometer is None and not m.geometry.is_rotation
        assert m.omega_deg is None
        assert m.unit_cell is None and m.space_group is None and m.bandwidth_fwhm is None
        assert m.saturation_value is None
        s = m.stored_spots
        np.testing.assert_array_equal(s.n_peaks, n)
        np.testing.assert_array_equal(s.x_px, x)
        np.testing.assert_array_equal(s.y_px, y)
        np.testing.assert_array_equal(s.intensity, inten)


def test_master_has_jungfraujoch_fields(make_file):
    master, _ = make_file(layout="legacy", extra={"/entry/instrument/detector/count_time": 0.002,
                                                  "/entry/user/note": "hello",
                                                  "/entry/instrument/detector/count_time@units": "s"})
    with h5py.File(master, "r") as f:
        assert f["entry"].attrs["NX_class"] == "NXentry"
        assert f["entry/definition"][()].decode() == "NXmx"
        det = f["entry/instrument/detector"]
        assert det.attrs["NX_class"] == "NXdetector"
        assert det["beam_center_x"].attrs["units"] == "pixel"
        assert det["detector_distance"].attrs["units"] == "m"
        assert det["detector_distance"][()] == pytest.approx(0.12)
        assert det["x_pixel_size"][()] == pytest.approx(75e-6)
        assert det["detectorSpecific/nimages"][()] == N_IMG
        assert det["detectorSpecific/x_pixels_in_detector"][()] == NX
        assert det["detectorSpecific/y_pixels_in_detector"][()] == NY
        assert "32008" in det["pixel_mask"]._filters
        tr = det["transformations/translation"]
        o = tr[()] * tr.attrs["vector"]
        np.testing.assert_allclose(o, [-37.25 * 75e-6, -30.5 * 75e-6, 0.12], atol=1e-15)
        om = f["entry/sample/transformations/omega"]
        assert om.attrs["transformation_type"] == "rotation" and om.attrs["units"] == "deg"
        np.testing.assert_allclose(om.attrs["vector"], (-1, 0, 0))
        assert f["entry/sample/depends_on"][()].decode() == "/entry/sample/transformations/omega"
        assert f["entry/data/data_000001"].chunks == (1, NY, NX)
        assert det["count_time"][()] == pytest.approx(0.002)
        assert det["count_time"].attrs["units"] == "s"
        assert f["entry/user/note"][()].decode() == "hello"


def test_streaming_blocks_and_float_input(tmp_path):
    """(k, ny, nx) blocks and float input: rounded, clipped, NaN → error value."""
    geom = small_geometry(rotation=False)
    rng = np.random.default_rng(1)
    fr = rng.normal(100, 30, (N_IMG, NY, NX))
    fr[0, 0, 0] = np.nan
    fr[1, 1, 1] = 1e9    # above uint16 range → clipped to max − 1
    fr[2, 2, 2] = -50.0  # below → 0
    blocks = [fr[:2], fr[2], fr[3:]]
    master = write_jungfraujoch(tmp_path / "f", iter(blocks), n_images=N_IMG, geometry=geom,
                                dtype="uint16", layout="legacy", images_per_file=4)
    exp = np.clip(np.rint(np.nan_to_num(fr)), 0, 65534).astype(np.uint16)
    exp[0, 0, 0] = 65535
    with open_master(master) as m:
        np.testing.assert_array_equal(m.read_frames(range(N_IMG)), exp)


def test_writer_is_atomic(tmp_path):
    geom = small_geometry()

    def frames():
        yield np.zeros((NY, NX))
        raise RuntimeError("simulator failed")

    with pytest.raises(RuntimeError):
        write_jungfraujoch(tmp_path / "a", frames(), n_images=2, geometry=geom)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="expected n_images"):
        write_jungfraujoch(tmp_path / "b", iter([np.zeros((NY, NX))]), n_images=2, geometry=geom,
                           layout="vds")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="does not match"):
        write_jungfraujoch(tmp_path / "c", iter([np.zeros((NY, NX + 1))]), n_images=1,
                           geometry=geom)
    with pytest.raises(ValueError, match="dtype"):
        write_jungfraujoch(tmp_path / "d", iter([np.zeros((NY, NX))]), n_images=1,
                           geometry=geom, dtype="float32")
    assert list(tmp_path.iterdir()) == []


def test_cast_from_other_integer_type_keeps_error_marker(tmp_path):
    geom = small_geometry(rotation=False)
    fr = random_frames("int32", 1)
    fr[0, 9, 9] = np.iinfo(np.int32).min
    fr[0, 9, 10] = 10**6
    master = write_jungfraujoch(tmp_path / "c", iter(fr), n_images=1, geometry=geom,
                                dtype="int16", layout="single")
    with open_master(master) as m:
        f0 = m.read_frame(0)
    assert f0[9, 9] == -32768 and f0[9, 10] == 32767
    assert np.count_nonzero(f0 == -32768) == 1


def test_atomic_path(tmp_path):
    from jfx.io.output_set import atomic_path

    final = tmp_path / "sub" / "out.h5"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent and tmp != final
        with h5py.File(tmp, "w") as f:
            f["x"] = 1
        assert not final.exists()
    with h5py.File(final, "r") as f:
        assert f["x"][()] == 1
    with pytest.raises(RuntimeError):
        with atomic_path(final) as tmp:
            tmp.write_bytes(b"partial")
            raise RuntimeError("boom")
    with h5py.File(final, "r") as f:  # untouched
        assert f["x"][()] == 1
    assert sorted(p.name for p in final.parent.iterdir()) == ["out.h5"]


def test_stale_temporary_files_of_dead_runs_are_removed(tmp_path):
    """Issue 14: a run killed with SIGKILL leaves ``.<name>.<pid>.*.tmp``; the next write of
    that output removes it, but never a live process's temporary file or another output's."""
    import os
    import subprocess
    import sys

    from jfx.io.output_set import atomic_path

    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                       capture_output=True, text=True, check=True)
    dead = int(p.stdout)  # that process has exited
    stale = tmp_path / f".out.txt.{dead}.ab12.tmp"
    live = tmp_path / f".out.txt.{os.getpid()}.cd34.tmp"
    other = tmp_path / f".other.txt.{dead}.ef56.tmp"
    for f in (stale, live, other):
        f.write_bytes(b"x")
    with atomic_path(tmp_path / "out.txt") as tmp:
        assert tmp.name.startswith(f".out.txt.{os.getpid()}.") and tmp.name.endswith(".tmp")
        tmp.write_text("new")
    assert (tmp_path / "out.txt").read_text() == "new"
    assert not stale.exists() and live.exists() and other.exists()

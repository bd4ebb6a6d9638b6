"""Reader tests: an independent hand-built NXmx file, the real files, bad input, chunks.

The hand-built fixture is written with raw h5py (not write_jungfraujoch) and its expected
pixel positions / rotation axis are computed by hand in numpy.
"""

from __future__ import annotations

import math
import os

import h5py
import hdf5plugin
import numpy as np
import pytest

from jfx.io.errors import InputError
from jfx.io.nxmx import open_master
from jfx.physics.diffraction import pixel_to_lab

from .conftest import N_IMG, NX, NY
from tests.conftest import missing_data


def _rot(axis, deg):
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    t = math.radians(deg)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(t) * K + (1 - math.cos(t)) * K @ K


def _tr(g, name, value, ttype, vector, depends_on, units, offset=None, **attrs):
    ds = g.create_dataset(name, data=value)
    ds.attrs["transformation_type"] = ttype
    ds.attrs["vector"] = np.asarray(vector, float)
    ds.attrs["depends_on"] = depends_on
    ds.attrs["units"] = units
    if offset is not None:
        ds.attrs["offset"] = np.asarray(offset, float)
    for k, v in attrs.items():
        ds.attrs[k] = v
    return ds


TWO_THETA_DEG = 15.0
DET_Z_MM = 150.0
MOD_OFFSET_MM = (2.5, 3.0, 0.0)
PIX_MM = 0.075
OMEGA0, DOMEGA = -30.0, 0.1


def build_handmade(path, *, fields=False, mount_deg=0.0, omega=None):
    """DLS-style NXmx: detector 2θ rotation → det_z (mm) → module_offset (offset attr, mm) →
    fast (−1,0,0) / slow (0,−1,0); sample phi → chi → omega (axis (−1,0,0)) [→ mount]."""
    with h5py.File(path, "w") as f:
        e = f.create_group("entry")
        e.attrs["NX_class"] = "NXentry"
        e["definition"] = np.bytes_("NXmx")
        d = e.create_group("data")
        rng = np.random.default_rng(7)
        frames = rng.integers(0, 50, (N_IMG, NY, NX)).astype(np.int32)
        d.create_dataset("data", data=frames, chunks=(1, NY, NX))
        inst = e.create_group("instrument")
        b = inst.create_group("beam")
        b.create_dataset("incident_energy", data=12.4)  # keV (units attr)
        b["incident_energy"].attrs["units"] = "keV"
        det = inst.create_group("detector")
        det.attrs["NX_class"] = "NXdetector"
        for k in ("x_pixel_size", "y_pixel_size"):
            det.create_dataset(k, data=PIX_MM)
            det[k].attrs["units"] = "mm"
        det["depends_on"] = np.bytes_("/entry/instrument/transformations/det_z")
        tr = inst.create_group("transformations")
        _tr(tr, "two_theta", np.array([TWO_THETA_DEG]), "rotation", (1, 0, 0), ".", "deg")
        _tr(tr, "det_z", np.array([DET_Z_MM]), "translation", (0, 0, 1),
            "/entry/instrument/transformations/two_theta", "mm")
        mod = det.create_group("module")
        mod.attrs["NX_class"] = "NXdetector_module"
        _tr(mod, "module_offset", 0.0, "translation", (1, 0, 0),
            "/entry/instrument/transformations/det_z", "mm", offset=MOD_OFFSET_MM)
        _tr(mod, "fast_pixel_direction", PIX_MM, "translation", (-1, 0, 0),
            "module_offset", "mm", offset=(0, 0, 0))   # relative reference
        _tr(mod, "slow_pixel_direction", PIX_MM, "translation", (0, -1, 0),
            "/entry/instrument/detector/module/module_offset", "mm", offset=(0, 0, 0))
        if fields:
            det.create_dataset("beam_center_x", data=10.0)
            det.create_dataset("beam_center_y", data=20.0)
            det.create_dataset("detector_distance", data=[0.2])
        s = e.create_group("sample")
        s["depends_on"] = np.bytes_("/entry/sample/transformations/phi")
        st = s.create_group("transformations")
        om = OMEGA0 + DOMEGA * np.arange(N_IMG) if omega is None else omega
        omega_dep = "/entry/sample/transformations/mount" if mount_deg else "."
        _tr(st, "omega", om, "rotation", (-1, 0, 0), omega_dep, "deg")
        if mount_deg:
            _tr(st, "mount", np.array([mount_deg]), "rotation", (0, 1, 0), ".", "deg")
        _tr(st, "chi", np.array([40.0]), "rotation", (0, 0, 1),
            "/entry/sample/transformations/omega", "deg")
        _tr(st, "phi", np.array([0.0]), "rotation", (-1, 0, 0),
            "/entry/sample/transformations/chi", "deg")
    return frames


def _hand_geometry():
    R = _rot((1, 0, 0), TWO_THETA_DEG)
    origin = R @ (np.asarray(MOD_OFFSET_MM) + np.array([0, 0, DET_Z_MM]))
    fast = R @ np.array([-1.0, 0, 0])
    slow = R @ np.array([0, -1.0, 0])
    return origin, fast, slow


def test_handmade_chain_pixel_positions(tmp_path):
    path = tmp_path / "hand.nxs"
    frames = build_handmade(path)
    origin, fast, slow = _hand_geometry()
    with open_master(path) as m:
        assert m.layout == "single" and m.codec == "none"
        np.testing.assert_array_equal(m.read_frames(range(N_IMG)), frames)
        g = m.geometry
        assert float(g.beam.wavelength_A) == pytest.approx(12.398419843320026 / 12.4)
        np.testing.assert_allclose(g.detector.fast_axis, fast, atol=1e-12)
        np.testing.assert_allclose(g.detector.slow_axis, slow, atol=1e-12)
        assert g.detector.pixel_size_mm == pytest.approx((PIX_MM, PIX_MM))
        x = np.array([0.0, 1.0, 79.0, 33.3, 0.0])
        y = np.array([0.0, 0.0, 63.0, 12.7, 63.0])
        want = origin + x[:, None] * PIX_MM * fast + y[:, None] * PIX_MM * slow
        got = np.asarray(pixel_to_lab(g.detector, g.beam, x, y))
        np.testing.assert_allclose(got, want, atol=1e-6)  # mm
        # beam centre / distance derived from the chain (no fields): where the z axis
        # meets the plane, by hand
        n = np.cross(fast, slow)
        t = origin @ n / n[2]
        hit = np.array([0, 0, t]) - origin
        assert float(g.detector.distance_mm) == pytest.approx(t, rel=1e-12)
        np.testing.assert_allclose(g.detector.beam_center_px,
                                   [hit @ fast / PIX_MM, hit @ slow / PIX_MM], atol=1e-9)
        gon = g.goniometer
        np.testing.assert_allclose(gon.axis, (-1, 0, 0), atol=1e-12)
        assert math.degrees(float(gon.start_rad)) == pytest.approx(OMEGA0)
        assert math.degrees(float(gon.increment_rad)) == pytest.approx(DOMEGA)
        assert m.pixel_mask.shape == (NY, NX) and not m.pixel_mask.any()
        assert m.error_value == np.iinfo(np.int32).min
        assert m.saturation_value is None


def test_handmade_fixed_rotation_above_scan_axis(tmp_path):
    path = tmp_path / "mount.nxs"
    build_handmade(path, mount_deg=30.0)
    with open_master(path) as m:
        np.testing.assert_allclose(m.geometry.goniometer.axis,
                                   _rot((0, 1, 0), 30.0) @ np.array([-1.0, 0, 0]), atol=1e-12)


def test_fields_disagreeing_with_chain_warn_and_win(tmp_path):
    path = tmp_path / "fields.nxs"
    build_handmade(path, fields=True)
    with open_master(path) as m:
        np.testing.assert_allclose(m.geometry.detector.beam_center_px, (10.0, 20.0))
        assert float(m.geometry.detector.distance_mm) == pytest.approx(200.0)
        assert len(m.warnings) == 1 and "using the fields" in m.warnings[0]


def test_nonuniform_or_short_omega(tmp_path):
    om = OMEGA0 + DOMEGA * np.arange(N_IMG)
    om[3] += 0.05
    build_handmade(tmp_path / "a.nxs", omega=om)
    with pytest.raises(InputError, match="not uniformly spaced") as ei:
        open_master(tmp_path / "a.nxs")
    _one_line(ei, "a.nxs")
    build_handmade(tmp_path / "b.nxs", omega=np.arange(3) * 0.1)
    with pytest.raises(InputError, match="has 3 angles for 5 images") as ei:
        open_master(tmp_path / "b.nxs")
    _one_line(ei, "b.nxs")


# --------------------------------------------------------------------------------------
# real files


def test_real_eiger_repack(shared_data):
    d = shared_data / "real_eiger16m_thaumatin"
    master = d / "eiger16m_thaumatin_master.h5"
    if not master.exists():
        pytest.skip(missing_data("real EIGER file", master))
    with h5py.File(d / "eiger16m_thaumatin_data_000001.h5", "r") as f:
        raw = f["/entry/data/data"][0]
    with open_master(master) as m:
        assert m.layout == "legacy" and m.codec == "bslz4" and m.n_images == 1
        assert m.image_shape == (4362, 4148) and m.dtype == np.int32
        fr = m.read_frame(0)
        assert fr.shape == (4362, 4148)
        n_err = int(np.count_nonzero(raw == np.iinfo(np.int32).min))
        assert n_err > 0
        assert int(np.count_nonzero(fr == m.error_value)) == n_err
        np.testing.assert_array_equal(fr, raw)
        g = m.geometry
        assert g.goniometer is None
        np.testing.assert_allclose(g.detector.beam_center_px, (2215.56, 2299.91), atol=1e-9)
        assert float(g.detector.distance_mm) == pytest.approx(213.96, abs=1e-6)
        assert float(g.beam.wavelength_A) == pytest.approx(0.98027, abs=1e-9)
        np.testing.assert_allclose(g.detector.fast_axis, (1, 0, 0))
        np.testing.assert_allclose(g.detector.slow_axis, (0, 1, 0))
        assert m.warnings == []
        with h5py.File(master, "r") as f:
            t = f["/entry/instrument/detector/transformations/translation"]
            origin = t[()] * t.attrs["vector"] * 1e3
        _check_pixels(g, origin, np.array([1.0, 0, 0]), np.array([0, 1.0, 0]))


def test_real_dls_master(shared_data):
    path = shared_data / "real_eiger16m_thaumatin" / "Therm_6_2_master_original.nxs"
    if not path.exists():
        pytest.skip(missing_data("DLS master", path))
    with pytest.raises(InputError, match="missing data file .*Therm_6_2_000001.h5") as ei:
        open_master(path)
    _one_line(ei, "Therm_6_2_master_original.nxs")
    with open_master(path, check_data=False) as m:
        assert m.layout == "vds" and m.n_images == 488 and m.image_shape == (4362, 4148)
        g = m.geometry
        np.testing.assert_allclose(g.detector.fast_axis, (-1, 0, 0))
        np.testing.assert_allclose(g.detector.slow_axis, (0, -1, 0))
        # the DLS file's fields use the pixel-corner convention: 0.5 px from the repack
        np.testing.assert_allclose(np.asarray(g.detector.beam_center_px) - (2215.56, 2299.91),
                                   (0.5, 0.5), atol=0.01)
        np.testing.assert_allclose(m.chain_beam_center_px, g.detector.beam_center_px, atol=1e-3)
        assert float(g.detector.distance_mm) == pytest.approx(213.96, abs=0.01)
        assert float(g.beam.wavelength_A) == pytest.approx(0.98027, abs=1e-5)
        gon = g.goniometer
        np.testing.assert_allclose(gon.axis, (-1, 0, 0), atol=1e-12)
        assert math.degrees(float(gon.start_rad)) == pytest.approx(174.0)
        assert math.degrees(float(gon.increment_rad)) == pytest.approx(0.25)
        assert m.omega_deg.shape == (488,)
        assert m.warnings == []
        with h5py.File(path, "r") as f:
            mo = f["/entry/instrument/detector/module/module_offset"]
            dz = f["/entry/instrument/detector_z/det_z"]
            origin = mo.attrs["offset"] * 1e3 + dz[0] * dz.attrs["vector"]  # m→mm, det_z mm
        _check_pixels(g, origin, np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]))
        with pytest.raises(InputError, match="missing data file .*Therm_6_2_000001.h5"):
            m.read_frame(0)


def _check_pixels(g, origin_mm, fast, slow):
    x = np.array([0.0, 4147.0, 2215.5, 100.25])
    y = np.array([0.0, 4361.0, 2300.0, 3000.75])
    want = origin_mm + x[:, None] * 0.075 * fast + y[:, None] * 0.075 * slow
    got = np.asarray(pixel_to_lab(g.detector, g.beam, x, y))
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)


# --------------------------------------------------------------------------------------
# bad input


def _one_line(ei, name):
    msg = str(ei.value)
    assert "\n" not in msg
    assert name in msg, msg


def test_missing_and_not_hdf5(tmp_path):
    with pytest.raises(InputError, match="input file not found") as ei:
        open_master(tmp_path / "nope_master.h5")
    _one_line(ei, "nope_master.h5")
    p = tmp_path / "text_master.h5"
    p.write_text("hello\n")
    with pytest.raises(InputError, match="not an HDF5 file") as ei:
        open_master(p)
    _one_line(ei, "text_master.h5")


def test_not_nxmx(tmp_path):
    p = tmp_path / "noentry.h5"
    with h5py.File(p, "w") as f:
        f["x"] = 1
    with pytest.raises(InputError, match="no /entry") as ei:
        open_master(p)
    _one_line(ei, "noentry.h5")
    p = tmp_path / "tomo.h5"
    with h5py.File(p, "w") as f:
        f["entry/definition"] = np.bytes_("NXtomo")
    with pytest.raises(InputError, match="not an NXmx file .*NXtomo") as ei:
        open_master(p)
    _one_line(ei, "tomo.h5")


def _edit(master, fn):
    with h5py.File(master, "r+") as f:
        fn(f)


def test_no_image_data(make_file):
    master, _ = make_file(layout="legacy")
    _edit(master, lambda f: f["entry/data"].pop("data_000001"))
    with pytest.raises(InputError, match="no image data") as ei:
        open_master(master)
    _one_line(ei, "run_master.h5")


@pytest.mark.parametrize("layout", ["legacy", "vds"])
def test_missing_data_file(make_file, layout):
    master, _ = make_file(layout=layout, images_per_file=2)
    (master.parent / "run_data_000002.h5").unlink()
    with pytest.raises(InputError, match="missing data file .*run_data_000002.h5") as ei:
        open_master(master)
    _one_line(ei, "run_master.h5")
    with open_master(master, check_data=False) as m:  # metadata still available
        assert m.n_images == N_IMG
        with pytest.raises(InputError, match="run_data_000002.h5"):
            m.read_frame(0)


def test_vds_source_without_dataset(make_file):
    master, _ = make_file(layout="vds", images_per_file=2)
    with h5py.File(master.parent / "run_data_000003.h5", "w") as f:
        f["entry/data/other"] = 1
    with pytest.raises(InputError, match="run_data_000003.h5 has no dataset /entry/data/data") as ei:
        open_master(master)
    assert "\n" not in str(ei.value)


def test_vds_truncated_source(make_file):
    master, _ = make_file(layout="vds", images_per_file=2)
    with h5py.File(master.parent / "run_data_000002.h5", "w") as f:
        f.create_dataset("entry/data/data", data=np.zeros((1, NY, NX), np.int32))
    with pytest.raises(InputError, match="run_data_000002.h5 is too small") as ei:
        open_master(master)
    assert "\n" not in str(ei.value)


def test_vds_relative_sources_independent_of_cwd(make_file, tmp_path, monkeypatch):
    master, fr = make_file(layout="vds", images_per_file=2)
    monkeypatch.chdir("/")
    with open_master(master) as m:
        np.testing.assert_array_equal(m.read_frames([4, 0]), fr[[4, 0]])


def test_unavailable_filter(tmp_path, make_file):
    master, _ = make_file(layout="legacy", images_per_file=5)
    data = master.parent / "run_data_000001.h5"
    with h5py.File(data, "r+") as f:
        del f["entry/data/data"]
        ds = f.create_dataset("entry/data/data", shape=(N_IMG, NY, NX), dtype="i4",
                              chunks=(1, NY, NX), compression=32099, allow_unknown_filter=True)
        ds.id.write_direct_chunk((0, 0, 0), b"\0" * 16)
    with pytest.raises(InputError, match=r"HDF5 filter .*32099.* not available") as ei:
        open_master(master)
    _one_line(ei, "run_data_000001.h5")


def test_inconsistent_frame_shapes(tmp_path, make_file):
    from jfx.io.jfjoch_writer import write_jungfraujoch
    from jfx.models.geometry import Detector, Geometry

    from .conftest import small_geometry

    master, _ = make_file(layout="legacy", images_per_file=3)
    g = small_geometry()
    other = Geometry(g.beam, Detector.create(120.0, (1, 1), (NY, NX + 2)), g.goniometer)
    write_jungfraujoch(tmp_path / "other", iter(np.zeros((2, NY, NX + 2))), n_images=2,
                       geometry=other)
    os.replace(tmp_path / "other_data_000001.h5", master.parent / "run_data_000002.h5")
    with pytest.raises(InputError, match="inconsistent frame shapes") as ei:
        open_master(master)
    _one_line(ei, "run_data_000002.h5")


def test_bad_pixel_mask_shape(make_file):
    master, _ = make_file(layout="single")

    def fn(f):
        det = f["entry/instrument/detector"]
        del det["pixel_mask"]
        det["pixel_mask"] = np.zeros((NY, NX - 1), np.uint32)

    _edit(master, fn)
    with pytest.raises(InputError, match=r"pixel_mask shape \(64, 79\) does not match") as ei:
        open_master(master)
    _one_line(ei, "run_master.h5")


def test_unsupported_dtype(tmp_path):
    p = tmp_path / "float_master.h5"
    build_handmade(p)
    with h5py.File(p, "r+") as f:
        del f["entry/data/data"]
        f["entry/data/data"] = np.zeros((N_IMG, NY, NX), np.float32)
    with pytest.raises(InputError, match="unsupported pixel data type float32") as ei:
        open_master(p)
    _one_line(ei, "float_master.h5")


@pytest.mark.parametrize(
    "remove,match",
    [
        (["entry/instrument/beam/incident_wavelength", "entry/instrument/beam/incident_energy"],
         "missing or invalid wavelength"),
        (["entry/instrument/detector/x_pixel_size", "entry/instrument/detector/module"],
         "missing pixel size"),
        (["entry/instrument/detector/beam_center_x", "entry/instrument/detector/depends_on",
          "entry/instrument/detector/module"], "missing beam centre"),
    ],
)
def test_missing_geometry_fields(make_file, remove, match):
    master, _ = make_file(layout="single")

    def fn(f):
        for r in remove:
            del f[r]

    _edit(master, fn)
    with pytest.raises(InputError, match=match) as ei:
        open_master(master)
    _one_line(ei, "run_master.h5")


def test_missing_fields_fall_back_to_chain(make_file):
    master, _ = make_file(layout="single")

    def fn(f):
        for r in ("beam_center_x", "beam_center_y", "detector_distance", "distance",
                  "x_pixel_size", "y_pixel_size"):
            del f["entry/instrument/detector"][r]

    _edit(master, fn)
    with open_master(master) as m:
        np.testing.assert_allclose(m.geometry.detector.beam_center_px, (37.25, 30.5), atol=1e-9)
        assert float(m.geometry.detector.distance_mm) == pytest.approx(120.0)
        assert m.geometry.detector.pixel_size_mm == pytest.approx((0.075, 0.075))


def test_omega_shorter_than_images(make_file):
    master, _ = make_file(layout="single")

    def fn(f):
        st = f["entry/sample/transformations"]
        attrs = dict(st["omega"].attrs)
        del st["omega"]
        st["omega"] = np.arange(3) * 0.25
        for k, v in attrs.items():
            st["omega"].attrs[k] = v

    _edit(master, fn)
    with pytest.raises(InputError, match="has 3 angles for 5 images") as ei:
        open_master(master)
    _one_line(ei, "run_master.h5")


# --------------------------------------------------------------------------------------
# chunked reading


@pytest.mark.parametrize("layout", ["legacy", "vds"])
def test_iter_chunks_order_and_workers(make_file, layout):
    master, fr = make_file(layout=layout, images_per_file=2, dtype="uint16")
    order = [4, 0, 3, 1, 2]
    with open_master(master) as m:
        for workers in (0, 1, 2):
            got = list(m.iter_chunks(order, chunk_size=2, workers=workers, prefetch=2))
            assert [c.tolist() for c, _ in got] == [[4, 0], [3, 1], [2]]
            for c, frames in got:
                assert frames.dtype == np.uint16
                np.testing.assert_array_equal(frames, fr[c])
        whole = list(m.iter_chunks(chunk_size=3, workers=2, prefetch=1))
        assert [c.tolist() for c, _ in whole] == [[0, 1, 2], [3, 4]]
        np.testing.assert_array_equal(np.concatenate([f for _, f in whole]), fr)
        # early exit closes the background readers cleanly
        it = m.iter_chunks(chunk_size=1, workers=2)
        c, f0 = next(it)
        it.close()
        np.testing.assert_array_equal(f0[0], fr[0])


def _corrupt_chunk(data_file, j):
    with h5py.File(data_file, "r") as f:
        info = f["entry/data/data"].id.get_chunk_info_by_coord((j, 0, 0))
    with open(data_file, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(b"\xff" * info.size)


@pytest.mark.parametrize("layout", ["legacy", "vds"])
def test_corrupt_chunk(make_file, layout):
    master, fr = make_file(layout=layout, images_per_file=2)
    _corrupt_chunk(master.parent / "run_data_000002.h5", 1)  # image 3
    with open_master(master) as m:
        np.testing.assert_array_equal(m.read_frame(2), fr[2])
        with pytest.raises(InputError, match=r"corrupt or unreadable data in image 3 \(file .*run_data_000002.h5") as ei:
            m.read_frame(3)
        assert "\n" not in str(ei.value)
        with pytest.raises(InputError, match="image 3"):
            m.read_frames([2, 3, 4])
        for workers in (1, 2):
            seen = []
            with pytest.raises(InputError, match=r"corrupt or unreadable data in image 3 .*run_data_000002"):
                for c, frames in m.iter_chunks(chunk_size=2, workers=workers):
                    seen.append(c.tolist())
            assert seen == [[0, 1]]


# --------------------------------------------------------------------------------------
# variants seen in real files


def test_vds_round_robin_interleaving(tmp_path):
    """2023 Jungfraujoch VDS: image i in file i mod 2 (hyperslab stride 2)."""
    rng = np.random.default_rng(5)
    frames = rng.integers(0, 1000, (6, NY, NX)).astype(np.int32)
    for k in range(2):
        with h5py.File(tmp_path / f"rr_data_{k + 1:06d}.h5", "w") as f:
            f.create_dataset("entry/data/data", data=frames[k::2], chunks=(1, NY, NX),
                             **hdf5plugin.Bitshuffle(cname="lz4"))
    build_handmade(tmp_path / "rr_master.h5")
    with h5py.File(tmp_path / "rr_master.h5", "r+") as f:
        del f["entry/data/data"]
        st = f["entry/sample/transformations"]
        attrs = dict(st["omega"].attrs)
        del st["omega"]
        st["omega"] = OMEGA0 + DOMEGA * np.arange(6)
        st["omega"].attrs.update(attrs)
        vl = h5py.VirtualLayout(shape=(6, NY, NX), dtype=np.int32)
        for k in range(2):
            vl[k::2] = h5py.VirtualSource(f"rr_data_{k + 1:06d}.h5", "/entry/data/data",
                                          shape=(3, NY, NX))
        f["entry/data"].create_virtual_dataset("data", vl, fillvalue=np.iinfo(np.int32).min)
    _corrupt_chunk(tmp_path / "rr_data_000002.h5", 1)  # image 3 = file 2, position 1
    with open_master(tmp_path / "rr_master.h5") as m:
        assert m.layout == "vds" and m.n_images == 6
        np.testing.assert_array_equal(m.read_frames([0, 1, 2, 4, 5]), frames[[0, 1, 2, 4, 5]])
        with pytest.raises(InputError, match=r"image 3 \(file .*rr_data_000002.h5\)"):
            m.read_frame(3)


def test_units_and_alternative_locations(make_file):
    from .conftest import small_geometry

    master, _ = make_file(layout="single")
    with open_master(master) as m:
        want = small_geometry()

    def fn(f):
        b = f["entry/instrument/beam"]
        b["incident_wavelength"][()] = 0.09795
        b["incident_wavelength"].attrs["units"] = "nm"
        det = f["entry/instrument/detector"]
        det["detector_distance"][()] = 120.0
        det["detector_distance"].attrs["units"] = "mm"
        det["x_pixel_size"][()] = 75.0
        det["x_pixel_size"].attrs["units"] = "um"
        s = f["entry/sample"]
        if "space_group" in s:
            del s["space_group"]
        s["space_group"] = np.bytes_("P 43 21 2")
        if "unit_cell" in s:
            del s["unit_cell"]
        s["unit_cell"] = np.array([[79.0, 79.0, 38.0, 90.0, 90.0, 90.0]])
        r = f["entry"].create_group("result")
        r["nPeaks"] = np.array([1, 0, 2, 0, 0], np.int32)
        r["peakXPosRaw"] = np.zeros((5, 3), np.float32)
        r["peakYPosRaw"] = np.ones((5, 3), np.float32)
        r["peakTotalIntensity"] = np.full((5, 3), 7.0, np.float32)

    _edit(master, fn)
    with open_master(master) as m:
        assert float(m.geometry.beam.wavelength_A) == pytest.approx(0.9795)
        assert float(m.geometry.detector.distance_mm) == pytest.approx(120.0)
        assert m.geometry.detector.pixel_size_mm == pytest.approx((0.075, 0.075))
        np.testing.assert_allclose(m.geometry.detector.beam_center_px,
                                   want.detector.beam_center_px)
        assert m.warnings == []
        assert m.space_group == 96
        assert m.unit_cell == pytest.approx((79.0, 79.0, 38.0, 90.0, 90.0, 90.0))
        np.testing.assert_array_equal(m.stored_spots.n_peaks, [1, 0, 2, 0, 0])
        assert m.stored_spots.intensity.shape == (5, 3)


def test_relative_master_path_then_chdir(make_file, tmp_path, monkeypatch):
    master, fr = make_file(layout="legacy", images_per_file=2)
    monkeypatch.chdir(tmp_path)
    with open_master(master.name) as m:
        monkeypatch.chdir("/")
        assert m.path == master
        np.testing.assert_array_equal(m.read_frame(4), fr[4])
        got = np.concatenate([f for _, f in m.iter_chunks(chunk_size=2, workers=2)])
        np.testing.assert_array_equal(got, fr)


def test_thread_read_ahead_is_bounded(make_file):
    import time

    master, fr = make_file(layout="single", n=12, frames=np.arange(12 * NY * NX, dtype=np.int32)
                           .reshape(12, NY, NX) % 1000)
    with open_master(master) as m:
        calls = []
        orig = m._source.read_into

        def counting(out, idx, *args):
            calls.append(list(idx))
            return orig(out, idx, *args)

        m._source.read_into = counting
        it = m.iter_chunks(chunk_size=1, workers=1, prefetch=2)
        i0, f0 = next(it)
        time.sleep(0.5)  # give the reader every chance to run ahead
        # consumer holds chunk 0; at most `prefetch` queued + 1 being put
        assert len(calls) <= 1 + 2 + 1
        rest = list(it)
        assert [c.tolist() for c, _ in rest] == [[i] for i in range(1, 12)]
        np.testing.assert_array_equal(np.concatenate([f0] + [f for _, f in rest]), fr)

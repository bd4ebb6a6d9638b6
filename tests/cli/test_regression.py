"""Real data (../shared/data; skipped when absent): the EIGER 16M thaumatin frame."""

from __future__ import annotations

import h5py
import hdf5plugin  # noqa: F401
import numpy as np
import pytest

from jfx.cli import process_main
from jfx.io.process_h5 import read_process_h5


pytestmark = pytest.mark.regression


def test_real_eiger_frame_statistics(shared_data, tmp_path, capsys):
    d = shared_data / "real_eiger16m_thaumatin"
    master = d / "eiger16m_thaumatin_master.h5"
    rc = process_main([str(master), "-o", str(tmp_path / "t"), "-X", "None"])
    assert rc == 0, capsys.readouterr().err
    pf = read_process_h5(tmp_path / "t_process.h5")
    # independent expectation straight from the HDF5 files
    with h5py.File(d / "eiger16m_thaumatin_data_000001.h5", "r") as f:
        frame = f["entry/data/data"][0].astype(np.int64)
    with h5py.File(master, "r") as f:
        mask = f["entry/instrument/detector/pixel_mask"][()] != 0
        sat = f["entry/instrument/detector/saturation_value"][()] \
            if "saturation_value" in f["entry/instrument/detector"] else None
    invalid = mask | (frame == np.iinfo(np.int32).min)
    valid = frame[~invalid]
    np.testing.assert_array_equal(pf.image.number, [0])
    assert pf.image.max[0] == valid.max()
    assert pf.image.mean[0] == np.float32(valid.sum() / valid.size)
    assert pf.image.n_masked[0] == invalid.sum()
    assert pf.image.n_saturated[0] == (int((valid >= sat).sum()) if sat is not None else 0)
    assert pf.beam_center_px == pytest.approx((2215.56, 2299.91), abs=1e-6)
    assert pf.wavelength_A == pytest.approx(0.98027, abs=1e-5)
    assert pf.detector_distance_m == pytest.approx(0.21396, abs=1e-5)
    # spot finding on a real thaumatin still: a hit with a sensible resolution estimate
    mx, az = pf.groups["MX"], pf.groups["azint"]
    np.testing.assert_array_equal(mx["imageNumber"], [0])
    assert mx["nPeaks"][0] >= 15
    assert np.sum(~np.isnan(mx["peakXPosRaw"][0])) == mx["nPeaks"][0]
    assert 1.0 < mx["resolutionEstimate"][0] < 10.0
    assert mx["strongPixels"][0] >= mx["nPeaks"][0]
    # azimuthal profile against the independent numpy computation on the same frame
    from jfx.azint.settings import AzintSettings
    from jfx.io.nxmx import open_master
    from tests.azint.test_azint import numpy_reference

    with open_master(master) as m:
        geo = m.geometry
    exp, q = numpy_reference(frame[None].astype(np.float64), geo, mask, AzintSettings(),
                             err=np.iinfo(np.int32).min, sat=sat)
    np.testing.assert_allclose(az["bin_to_q"], q, rtol=1e-6)
    np.testing.assert_allclose(az["image"], exp, rtol=1e-4, atol=1e-6, equal_nan=True)
    assert np.isfinite(az["image"][0]).sum() > 100


def test_real_nxmx_without_its_data_files(shared_data, tmp_path, capsys):
    master = shared_data / "real_eiger16m_thaumatin" / "Therm_6_2_master_original.nxs"
    rc = process_main([str(master), "-o", str(tmp_path / "t"), "-X", "None"])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert err.startswith("jfjoch_process: error: ") and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())

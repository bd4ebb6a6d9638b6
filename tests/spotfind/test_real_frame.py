"""Real EIGER 16M thaumatin frame (../shared/data; skipped when absent)."""

from __future__ import annotations

import numpy as np
import pytest

from jfx.spotfind.find import ThresholdSpotFinder
from jfx.spotfind.settings import ThresholdSpotFinderSettings
from jfx.spotfind.strong import strong_pixels
from tests.spotfind.conftest import reference_strong
from tests.conftest import missing_data


@pytest.fixture(scope="module")
def thaumatin(shared_data):
    from jfx.io.nxmx import open_master

    path = shared_data / "real_eiger16m_thaumatin" / "eiger16m_thaumatin_master.h5"
    if not path.exists():
        pytest.skip(missing_data("real thaumatin frame", path))
    with open_master(path) as m:
        frame = m.read_frame(0)
        mask = np.asarray(m.pixel_mask, dtype=bool)
        return frame, mask, m.geometry, m.error_value, m.saturation_value


def test_real_crop_kernel_equals_reference(thaumatin):
    frame, mask, _, err, sat = thaumatin
    # 1024 × 1024 crop around the beam centre (2215.6, 2299.9): spots, module gaps, masks
    sl = np.s_[1800:2824, 1700:2724]
    f, m = frame[sl], mask[sl]
    for sigma, thr in ((3.0, 10.0), (3.0, 2.0)):
        r = strong_pixels(f, m, err, sat, sigma=sigma, threshold=thr, strip=128)
        ref = reference_strong(f, m, err, sat, sigma, thr, 31, fast=True)
        np.testing.assert_array_equal(r.strong, ref)
        assert ref.sum() > 5


def test_real_frame_spot_count(thaumatin):
    frame, mask, geo, err, sat = thaumatin
    f = ThresholdSpotFinder.create(ThresholdSpotFinderSettings(), geo, mask, err, sat)
    r = f(frame[None], np.array([0]))
    st = {k: v[0] for k, v in r.stats.items()}
    # one 0.25° rotation frame of thaumatin, very low background (~0.003 photons/pixel)
    assert 20 <= st["n_spots"] <= 250 and st["n_spots_found"] == st["n_spots"]
    assert 0 < st["bkg_estimate"] < 0.05
    assert 1.5 <= st["resolution_estimate"] <= 4.0
    assert st["n_masked"] == np.count_nonzero(mask | (frame == err))

"""The refine verb's input handling (no solving: cheap)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jfx.models.lattice import Lattice
from jfx.models.spots import SpotList
from jfx.refine.refine import RefineSpots, _bucket, _compact, refine
from jfx.refine.settings import RefineSettings
from tests.refine import geometry


def test_spots_from_spot_list_and_compaction():
    n_img, cap = 2, 5
    x = np.arange(10, dtype=np.float32).reshape(n_img, cap)
    sl = SpotList(image=np.arange(n_img), x_px=x, y_px=x + 100, frame=x * 0 + 0.5,
                  intensity=x, n_pixels=np.ones_like(x, np.int32), d_A=x,
                  ice_ring=np.zeros_like(x, bool),
                  valid=np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], bool),
                  n_found=np.array([3, 5]), strong_pixels=np.array([9, 9]))
    hkl = np.ones((n_img, cap, 3), np.int32)
    hkl[1, 1] = 0  # not indexed
    sp = RefineSpots.from_spot_list(sl, hkl)
    np.testing.assert_array_equal(sp.valid, [[1, 1, 1, 0, 0], [1, 0, 1, 1, 1]])
    assert sp.x_px.dtype == np.float64
    np.testing.assert_array_equal(sp.y_px[0, :3], [100, 101, 102])
    np.testing.assert_array_equal(sp.x_px[0, 3:], 0.0)  # invalid rows zeroed
    # compaction moves valid rows to the front, keeping their order, and pads to n columns
    _, xx, _, _, v = _compact(sp, 8)
    assert xx.shape == (2, 8)
    np.testing.assert_array_equal(xx[1, :4], [5, 7, 8, 9])
    np.testing.assert_array_equal(v[1], [1, 1, 1, 1, 0, 0, 0, 0])
    assert [_bucket(n) for n in (1, 64, 65, 300, 513, 1100)] == [64, 64, 128, 512, 1024, 1536]


def test_bad_inputs_raise():
    g = geometry()
    sp = RefineSpots.create(np.ones((1, 10, 3), np.int32), np.zeros((1, 10)), np.zeros((1, 10)))
    lat = Lattice(basis=jnp.eye(3) * 50.0)
    with pytest.raises(ValueError, match="solver"):
        refine(sp, g, lat, RefineSettings(), solver="adam")
    with pytest.raises(ValueError, match="loss"):
        refine(sp, g, lat, RefineSettings(), loss="cauchy")
    with pytest.raises(ValueError, match="threshold"):
        refine(sp, g, lat, RefineSettings(), huber_px=0.0)
    with pytest.raises(ValueError, match="basis"):
        refine(sp, g, Lattice(basis=jnp.ones((2, 3, 3))), RefineSettings())
    with pytest.raises(ValueError, match="shape"):
        RefineSpots.create(np.ones((1, 10, 3)), np.zeros((1, 9)), np.zeros((1, 10)))
    with pytest.raises(ValueError, match="goniometer"):
        from jfx.refine.refine import refine_rotation
        refine_rotation(sp, g, lat, RefineSettings())

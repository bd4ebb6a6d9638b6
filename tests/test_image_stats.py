"""Per-image statistics kernel against an independent numpy computation."""

from __future__ import annotations

import numpy as np
import pytest

from jfx.models.images import ImageStats
from jfx.spotfind.stats import image_stats


def numpy_reference(frames, mask, err, sat):
    out = []
    for f in frames.astype(np.int64):
        invalid = mask.copy()
        if err is not None:
            invalid |= f == err
        v = f[~invalid]
        if v.size == 0:
            out.append((0, np.float32(np.nan), int(invalid.sum()), 0))
            continue
        n_sat = int((v >= sat).sum()) if sat is not None else 0
        out.append((int(v.max()), np.float32(v.sum() / v.size), int(invalid.sum()), n_sat))
    return [np.array(c) for c in zip(*out)]


@pytest.mark.parametrize("dtype", [np.int16, np.int32, np.uint16, np.uint32])
def test_matches_numpy(dtype):
    rng = np.random.default_rng(3)
    info = np.iinfo(dtype)
    err = int(info.min) if info.min < 0 else int(info.max)
    sat = int(min(info.max - 1, 30000))
    frames = rng.integers(0, 500, size=(5, 17, 23)).astype(dtype)
    frames[0, 2, 3] = err
    frames[0, 4, 4] = err
    frames[1, 1, 1] = sat
    frames[1, 9, 9] = sat + 1 if sat + 1 != err else sat
    frames[2, 5, 5] = info.max if info.max != err else info.max - 1  # large valid value
    if info.min < 0:
        frames[3, 6, 6] = -7  # negative valid pixel (signed data)
    mask = np.zeros((17, 23), dtype=bool)
    mask[:, 0] = True
    frames[4, :, 0] = 10000  # hidden under the mask
    got = image_stats(frames, mask, err, sat)
    exp = numpy_reference(frames, mask, err, sat)
    for g, e in zip(got, exp):
        np.testing.assert_array_equal(g, e)
    assert got[0].dtype == np.int64 and got[1].dtype == np.float32
    assert got[2].dtype == np.int64 and got[3].dtype == np.int64
    assert got[2][0] == 17 + 2 and got[3][1] >= 1


def test_fully_masked_gives_nan_mean_and_zero_max():
    frames = np.full((2, 4, 5), 7, dtype=np.int32)
    frames[1, 0, 0] = np.iinfo(np.int32).min
    mask = np.ones((4, 5), dtype=bool)
    vmax, mean, n_masked, n_sat = image_stats(frames, mask, int(np.iinfo(np.int32).min), 5)
    np.testing.assert_array_equal(vmax, [0, 0])
    assert np.all(np.isnan(mean))
    np.testing.assert_array_equal(n_masked, [20, 20])
    np.testing.assert_array_equal(n_sat, [0, 0])


def test_no_mask_no_special_values():
    frames = np.arange(2 * 3 * 4, dtype=np.uint16).reshape(2, 3, 4)
    vmax, mean, n_masked, n_sat = image_stats(frames)
    np.testing.assert_array_equal(vmax, [11, 23])
    np.testing.assert_array_equal(mean, np.float32([5.5, 17.5]))
    np.testing.assert_array_equal(n_masked, [0, 0])
    np.testing.assert_array_equal(n_sat, [0, 0])


def test_mean_is_exact_for_large_sums():
    # 2^24 + 1 is not representable in float32: a float32 running sum would drift.
    frames = np.full((1, 64, 64), 2**24 + 1, dtype=np.int32)
    frames[0, 0, 0] = 2**24 + 4097
    _, mean, _, _ = image_stats(frames)
    assert mean[0] == np.float32((2**24 + 1) + 4096 / 4096)


def test_input_validation():
    with pytest.raises(ValueError, match="integer"):
        image_stats(np.zeros((1, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        image_stats(np.zeros((1, 2, 2), dtype=np.int32), np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match=r"\(k, ny, nx\)"):
        image_stats(np.zeros((2, 2), dtype=np.int32))


def test_image_stats_container():
    s = ImageStats(np.array([1, 3]), [5, 6], [1.5, 2.5], [0, 1], [0, 0])
    assert s.mean.dtype == np.float32 and s.max.dtype == np.int64
    both = ImageStats.concatenate([s, s])
    np.testing.assert_array_equal(both.number, [1, 3, 1, 3])
    with pytest.raises(ValueError, match="shape"):
        ImageStats(np.array([1, 2]), [1], [1.0, 2.0], [0, 0], [0, 0])


def test_special_values_outside_the_dtype_range():
    frames = np.array([[[0, 5], [65535, 7]]], dtype=np.uint16)
    # saturation above uint16 max: nothing saturates; error value outside the range: none
    vmax, mean, n_masked, n_sat = image_stats(frames, None, -1, 70000)
    assert (vmax[0], n_masked[0], n_sat[0]) == (65535, 0, 0)
    vmax, mean, n_masked, n_sat = image_stats(frames, None, 65535, -3)
    assert (vmax[0], n_masked[0], n_sat[0]) == (7, 1, 3)  # saturation below min: all valid


def test_exact_counts_and_sums_near_the_dtype_limits():
    rng = np.random.default_rng(7)
    frames = rng.integers(2**32 - 1000, 2**32 - 1, size=(2, 9, 301), dtype=np.uint64)
    frames = frames.astype(np.uint32)
    frames[0, 3, 4] = 2**32 - 1  # the unsigned error value
    mask = np.zeros((9, 301), dtype=bool)
    mask[2] = True
    got = image_stats(frames, mask, 2**32 - 1, 2**32 - 10)
    exp = numpy_reference(frames, mask, 2**32 - 1, 2**32 - 10)
    for g, e in zip(got, exp):
        np.testing.assert_array_equal(g, e)

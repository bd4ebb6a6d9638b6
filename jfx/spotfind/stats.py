"""Per-image statistics of raw detector frames (JAX kernel; the result type is
:class:`jfx.models.images.ImageStats`).

For each frame the kernel returns

* ``max``: the largest *valid* pixel value (int64); 0 for a fully masked frame,
* ``mean``: the mean of the valid pixels (float32); NaN for a fully masked frame,
* ``n_masked``: number of invalid pixels (int64): ``pixel_mask`` set OR value == error value,
* ``n_saturated``: number of valid pixels with value ≥ the saturation value (int64).

The mean is the exact int64 sum divided by the valid count (float64), then rounded to
float32, so it does not depend on summation order. Masks and special values are passed as
arguments (never closed over); frames keep their native integer dtype; per-row sums are exact
float matrix-vector products (see the kernel) combined in int64; one compile per
(batch, ny, nx, dtype). An error value outside the dtype's range never matches; a saturation
value above the dtype's maximum never matches.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np


@partial(jax.jit, static_argnames=("has_error_value", "has_saturation_value"))
def _image_stats_kernel(frames, pixel_mask, error_value, saturation_value,
                        has_error_value: bool, has_saturation_value: bool):
    # XLA-CPU integer reductions are slow (not vectorised); per-row sums are therefore
    # matrix-vector products with a ones vector, which are exact: counts per row ≤ nx < 2^24
    # in float32, value sums per row |Σ| < nx·2^32 ≤ 2^53 in float64 (every partial sum is an
    # integer, so the BLAS summation order does not matter). Row results are then summed in
    # int64. Comparisons and the max run in the native dtype.
    k, ny, nx = frames.shape
    invalid = jnp.broadcast_to(pixel_mask, frames.shape)
    if has_error_value:
        invalid = invalid | (frames == error_value.astype(frames.dtype))
    valid = ~invalid
    ones32 = jnp.ones((nx,), dtype=jnp.float32)
    ones64 = jnp.ones((nx,), dtype=jnp.float64)

    def count(b):  # (k, ny, nx) bool -> (k,) int64
        return jnp.sum((b.astype(jnp.float32) @ ones32).astype(jnp.int64), axis=1)

    n_masked = count(invalid)
    n_valid = ny * nx - n_masked
    lowest = jnp.iinfo(frames.dtype).min
    vmax = jnp.max(jnp.where(valid, frames, lowest), axis=(1, 2)).astype(jnp.int64)
    vmax = jnp.where(n_valid > 0, vmax, jnp.int64(0))
    rows = jnp.where(valid, frames, 0).astype(jnp.float64) @ ones64
    total = jnp.sum(rows.astype(jnp.int64), axis=1)
    mean = jnp.where(n_valid > 0, total.astype(jnp.float64) / jnp.maximum(n_valid, 1), jnp.nan)
    if has_saturation_value:
        n_sat = count(valid & (frames >= saturation_value.astype(frames.dtype)))
    else:
        n_sat = jnp.zeros_like(n_valid)
    return vmax, mean.astype(jnp.float32), n_masked, n_sat


def image_stats(
    frames: np.ndarray,
    pixel_mask: np.ndarray | None = None,
    error_value: int | None = None,
    saturation_value: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-image statistics of a batch of frames.

    Args:
        frames: (k, ny, nx) integer frames (native detector dtype).
        pixel_mask: (ny, nx) bool, True = invalid pixel; ``None`` = no mask.
        error_value: value marking an invalid pixel in the frames (e.g. the type minimum for
            signed, maximum for unsigned data); ``None`` = none.
        saturation_value: valid pixels ≥ this count as saturated; ``None`` = none.

    Returns:
        (max int64 (k,), mean float32 (k,), n_masked int64 (k,), n_saturated int64 (k,)).
    """
    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (k, ny, nx), got shape {frames.shape}")
    if not np.issubdtype(frames.dtype, np.integer):
        raise ValueError(f"frames must be integer, got {frames.dtype}")
    if frames.dtype == np.uint64:
        raise ValueError("uint64 frames are not supported")
    if pixel_mask is None:
        pixel_mask = np.zeros(frames.shape[1:], dtype=bool)
    pixel_mask = np.asarray(pixel_mask, dtype=bool)
    if pixel_mask.shape != frames.shape[1:]:
        raise ValueError(f"pixel mask shape {pixel_mask.shape} != frame shape {frames.shape[1:]}")
    info = np.iinfo(frames.dtype)
    k = frames.shape[0]
    # special values outside the dtype's range can never (error) / always (saturation) match
    has_err = error_value is not None and info.min <= int(error_value) <= info.max
    has_sat = saturation_value is not None and int(saturation_value) <= info.max
    sat = max(int(saturation_value), int(info.min)) if has_sat else 0
    out = _image_stats_kernel(
        frames, pixel_mask,
        np.int64(error_value if has_err else 0), np.int64(sat),
        has_error_value=has_err, has_saturation_value=has_sat,
    )
    vmax, mean, n_masked, n_sat = (np.asarray(o) for o in out)
    return vmax.reshape(k), mean.reshape(k), n_masked.reshape(k), n_sat.reshape(k)

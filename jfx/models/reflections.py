"""Reflection tables (one row per observation) and their flag bits.

Column meanings follow DIALS / NXreflections; names are the ``/entry/reflections`` fields of
the file contract. Rows are padded to a capacity; ``valid`` marks real rows.
"""

from __future__ import annotations

import enum

import jax.numpy as jnp

from jfx.models._pytree import pytree_dataclass


class ReflectionFlag(enum.IntFlag):
    """Bits of the ``flags`` column (uint32), written to ``/entry/reflections/flags``."""

    PREDICTED = 1 << 0  # row comes from the prediction
    OBSERVED = 1 << 1  # a spot centroid was matched (observed_x/y valid)
    INDEXED = 1 << 2  # matched spot was assigned this hkl by indexing
    INTEGRATED_SUM = 1 << 3  # int_sum / int_sum_var valid
    INTEGRATED_PRF = 1 << 4  # int_prf / int_prf_var valid
    OVERLOADED = 1 << 5  # saturated pixel in the signal area
    MASKED_PIXEL = 1 << 6  # masked/invalid pixel in the signal area
    OVERLAP = 1 << 7  # signal area overlaps another reflection
    OUTLIER = 1 << 8  # rejected as an outlier (integration or scaling)
    EDGE = 1 << 9  # signal area crosses the detector edge
    BAD_BACKGROUND = 1 << 10  # too few background pixels
    PARTIAL = 1 << 11  # partial fraction < 1 on this image (rotation)


@pytree_dataclass
class Reflections:
    """Flat reflection table with ``n_refl`` rows (padded).

    Attributes (all (n_refl,) unless noted; px: first pixel centre = 0):
        hkl: (n_refl, 3) int32 Miller indices in the indexed setting.
        image: int32 image number (rotation: frame of the centroid).
        predicted_x, predicted_y: float32 px.
        predicted_phi_rad: float64 rotation angle of the centroid (NaN for stills).
        observed_x, observed_y: float32 px, NaN if no centroid.
        d_A: float32 resolution (Å).
        partiality: float32 model partiality.
        lp: float32 Lorentz × polarisation factor.
        int_sum, int_sum_var: float32 summation intensity and variance (photons).
        int_prf, int_prf_var: float32 profile-fitted intensity and variance (NaN if none).
        background_mean: float32 photons/pixel.
        flags: uint32 :class:`ReflectionFlag` bits.
        valid: bool, row holds a reflection.
    """

    hkl: jnp.ndarray
    image: jnp.ndarray
    predicted_x: jnp.ndarray
    predicted_y: jnp.ndarray
    predicted_phi_rad: jnp.ndarray
    observed_x: jnp.ndarray
    observed_y: jnp.ndarray
    d_A: jnp.ndarray
    partiality: jnp.ndarray
    lp: jnp.ndarray
    int_sum: jnp.ndarray
    int_sum_var: jnp.ndarray
    int_prf: jnp.ndarray
    int_prf_var: jnp.ndarray
    background_mean: jnp.ndarray
    flags: jnp.ndarray
    valid: jnp.ndarray

    @property
    def capacity(self) -> int:
        return int(self.hkl.shape[0])

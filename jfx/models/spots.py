"""Spot lists: fixed capacity per image, a validity mask and an overflow flag.

Ragged per-image spot lists live in padded arrays of capacity ``max_spots`` (the
``--max-spots`` option). ``n_found`` keeps the number of spots found before truncation so
overflow is data, never a silent loss.

:class:`StoredSpots` holds the spot lists a master file may already carry (read by
:mod:`jfx.io.nxmx`, written by :mod:`jfx.io.jfjoch_writer`).
"""

from __future__ import annotations

from dataclasses import dataclass

import jax.numpy as jnp
import numpy as np

from jfx.models._pytree import pytree_dataclass


@pytree_dataclass
class SpotList:
    """Spots of ``n_img`` images.

    Attributes:
        image: (n_img,) int64 index of each image in the input file.
        x_px, y_px: (n_img, max_spots) float32 centroids (px; first pixel centre = 0).
        frame: (n_img, max_spots) float32 centroid frame coordinate (rotation; = image
            number + 0.5 for a spot seen in one image).
        intensity: (n_img, max_spots) float32 background-subtracted photons.
        n_pixels: (n_img, max_spots) int32 strong pixels in the spot.
        d_A: (n_img, max_spots) float32 resolution of the centroid (Å).
        ice_ring: (n_img, max_spots) bool, centroid on an ice ring.
        valid: (n_img, max_spots) bool, slot holds a spot.
        n_found: (n_img,) int32 spots found before truncation to ``max_spots``.
        strong_pixels: (n_img,) int32 strong-pixel count.
    """

    image: jnp.ndarray
    x_px: jnp.ndarray
    y_px: jnp.ndarray
    frame: jnp.ndarray
    intensity: jnp.ndarray
    n_pixels: jnp.ndarray
    d_A: jnp.ndarray
    ice_ring: jnp.ndarray
    valid: jnp.ndarray
    n_found: jnp.ndarray
    strong_pixels: jnp.ndarray

    @property
    def max_spots(self) -> int:
        return int(self.x_px.shape[-1])

    @property
    def n_spots(self) -> jnp.ndarray:
        """(n_img,) spots kept (≤ max_spots)."""
        return jnp.sum(self.valid, axis=-1).astype(jnp.int32)

    @property
    def overflow(self) -> jnp.ndarray:
        """(n_img,) bool: more spots were found than the capacity holds."""
        return self.n_found > self.max_spots


@dataclass(frozen=True)
class StoredSpots:
    """Spot lists stored in the master file (CXI layout, ``/entry/MX``).

    Attributes:
        n_peaks: (n_images,) int32 number of valid spots per image.
        x_px, y_px: (n_images, max_spots) float32 centroids (px, first pixel centre = 0);
            padding as in the file (NaN or 0).
        intensity: (n_images, max_spots) float32 total intensity (photons).
    """

    n_peaks: np.ndarray
    x_px: np.ndarray
    y_px: np.ndarray
    intensity: np.ndarray

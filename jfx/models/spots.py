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


@dataclass(frozen=True)
class FrameSpots:
    """Every spot of one or more frames that passed the spot filters, before the per-image
    ``max_spots`` truncation (the input of 3D joining, :mod:`jfx.spotfind.join3d`).

    Rows of all frames concatenated, ordered by image (host numpy arrays, m rows).

    Attributes:
        image: (m,) int64 image number (0-based index into the input file).
        x_px, y_px: (m,) float32 2D centroids (px; first pixel centre = 0).
        intensity: (m,) float32 background-subtracted photons.
        n_pixels: (m,) int32 strong pixels.
        bbox: (m, 4) int32 bounding box of the strong pixels x_min, x_max, y_min, y_max
            (inclusive pixel indices).
    """

    image: np.ndarray
    x_px: np.ndarray
    y_px: np.ndarray
    intensity: np.ndarray
    n_pixels: np.ndarray
    bbox: np.ndarray

    @property
    def n(self) -> int:
        return int(self.image.size)

    def take(self, idx: np.ndarray) -> FrameSpots:
        """The rows ``idx`` (index array or boolean mask)."""
        return FrameSpots(self.image[idx], self.x_px[idx], self.y_px[idx], self.intensity[idx],
                          self.n_pixels[idx], self.bbox[idx])

    @staticmethod
    def empty() -> FrameSpots:
        return FrameSpots(np.zeros(0, np.int64), np.zeros(0, np.float32),
                          np.zeros(0, np.float32), np.zeros(0, np.float32),
                          np.zeros(0, np.int32), np.zeros((0, 4), np.int32))


@dataclass(frozen=True)
class Spots3D:
    """Spots of a rotation sweep joined across consecutive frames (m spots, host numpy).

    A 3D spot is the union of the 2D spots of consecutive images that overlap
    (:mod:`jfx.spotfind.join3d`); its centroid is the intensity-weighted mean of the 2D
    centroids and of their frame coordinates (image + 0.5), as DIALS' 3D spot centroids
    (Winter et al. 2018, Acta Cryst. D74, 85–97).

    Attributes:
        x_px, y_px: (m,) float64 centroid (px; first pixel centre = 0).
        frame: (m,) float64 centroid frame coordinate (image i covers [i, i + 1)).
        frame_sd: (m,) float64 intensity-weighted standard deviation of the frame coordinates
            of its 2D spots (frames; 0 for a spot seen on one image).
        first_image, last_image: (m,) int64 first and last image (inclusive).
        intensity: (m,) float64 summed background-subtracted photons.
        n_pixels: (m,) int64 summed strong pixels.
        n_images: (m,) int32 2D spots joined (= last − first + 1 unless a spot split).
    """

    x_px: np.ndarray
    y_px: np.ndarray
    frame: np.ndarray
    frame_sd: np.ndarray
    first_image: np.ndarray
    last_image: np.ndarray
    intensity: np.ndarray
    n_pixels: np.ndarray
    n_images: np.ndarray

    @property
    def n(self) -> int:
        return int(self.x_px.size)

    def take(self, idx: np.ndarray) -> Spots3D:
        """The spots ``idx`` (index array or boolean mask)."""
        return Spots3D(**{f: getattr(self, f)[idx] for f in self.__dataclass_fields__})

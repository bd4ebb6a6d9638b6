"""Spot-finding settings (config group ``spotfind``; ``--spot-*`` and ``--max-spots``)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jfx.models.geometry import Geometry
from jfx.spotfind.base import SpotFinderSettings
from jfx.spotfind.find import ThresholdSpotFinder
from jfx.validate import setting

KEEP_CHOICES = ("lowest_resolution", "strongest")
KERNEL_CHOICES = ("auto", "dense", "sparse")


@dataclasses.dataclass(frozen=True)
class ThresholdSpotFinderSettings(SpotFinderSettings):
    """Local-threshold spot finder (jfjoch's CPU/GPU spot finder; option ``threshold``).

    A pixel is strong when it exceeds the local background by ``sigma`` standard deviations
    AND holds at least ``threshold`` photons; spots are the connected strong pixels.

    Attributes:
        sigma: noise level in σ (``--spot-sigma``, default 3.0), > 0.
        threshold: photon-count threshold (``--spot-threshold``, default 10), ≥ 0.
        high_resolution_A: spots at d below this are dropped (Å, ``--spot-high-resolution``,
            default 1.5); ``None`` = no limit.
        low_resolution_A: spots at d above this are dropped (Å); ``None`` = no limit.
        max_spots: spots kept per image (``--max-spots``, default 250), ≥ 1.
        keep: which spots are kept when more than ``max_spots`` are found:
            ``lowest_resolution`` (largest d first, as jfjoch) or ``strongest`` (largest
            background-subtracted intensity first).
        window: side of the square local-statistics window (px, odd, 3…181; default 31).
        min_pixels: spots with fewer strong pixels are dropped (default 1).
        max_pixels: spots with more strong pixels are dropped (default 1000).
        ice_ring_width_invA: half-width of an ice ring in 1/d (Å⁻¹, default 0.005).
        drop_ice_rings: drop spots on ice rings (default False: keep and flag them, as
            jfjoch counts them).
        centroid_grow_px: the centroid is taken over the spot's strong pixels grown by this
            many pixels (default 1; 0 = strong pixels only, biased by ~0.05 px).
        kernel: how the window statistics are computed — ``auto`` (default: only at the
            candidate pixels v ≥ threshold when there are few, else over the whole frame),
            ``dense`` (whole frame, jit box sums) or ``sparse`` (always candidates only).
            All three give the same strong pixels; only the speed differs.
    """

    sigma: float = setting(3.0, positive=True, label="spot sigma (--spot-sigma)")
    threshold: float = setting(10.0, minimum=0.0, label="spot threshold (--spot-threshold)")
    high_resolution_A: float | None = setting(
        1.5, positive=True, label="spot high-resolution limit (--spot-high-resolution)")
    low_resolution_A: float | None = setting(None, positive=True,
                                             label="spot low-resolution limit")
    max_spots: int = setting(250, minimum=1, label="max spots (--max-spots)")
    keep: str = setting("lowest_resolution", choices=KEEP_CHOICES)
    window: int = setting(31, minimum=3, maximum=181)
    min_pixels: int = setting(1, minimum=1)
    max_pixels: int = setting(1000, minimum=1)
    ice_ring_width_invA: float = setting(0.005, positive=True)
    drop_ice_rings: bool = False
    centroid_grow_px: int = setting(1, minimum=0)
    kernel: str = setting("auto", choices=KERNEL_CHOICES)

    def create(self, geometry: Geometry, pixel_mask: np.ndarray | None,
               error_value: int | None, saturation_value: float | None,
               d_map: np.ndarray | None = None) -> ThresholdSpotFinder:
        """The per-dataset :class:`jfx.spotfind.find.ThresholdSpotFinder`."""
        return ThresholdSpotFinder.create(self, geometry, pixel_mask, error_value,
                                          saturation_value, d_map=d_map)

    def validate(self) -> None:
        if self.window % 2 == 0:
            raise ValueError(f"spotfind.window must be odd and <= 181, got {self.window}")
        if self.max_pixels < self.min_pixels:
            raise ValueError(f"spotfind.max_pixels ({self.max_pixels}) must be >= "
                             f"spotfind.min_pixels ({self.min_pixels})")
        if (self.high_resolution_A is not None and self.low_resolution_A is not None
                and self.low_resolution_A <= self.high_resolution_A):
            raise ValueError(
                f"spot low-resolution limit {self.low_resolution_A:g} A must be larger than the "
                f"high-resolution limit {self.high_resolution_A:g} A"
            )

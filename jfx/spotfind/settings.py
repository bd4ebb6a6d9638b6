"""Spot-finding settings (config group ``spotfind``; ``--spot-*`` and ``--max-spots``)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from jfx.spotfind.base import SpotFinderSettings
from jfx.validate import setting

if TYPE_CHECKING:  # the finder needs JAX: imported where it is built (jfx.lazy)
    from jfx.models.geometry import Geometry
    from jfx.spotfind.find import ThresholdSpotFinder

KEEP_CHOICES = ("lowest_resolution", "strongest", "stratified")
KERNEL_CHOICES = ("auto", "dense", "sparse")
MAX_SPOTS_LIMIT = 10_000
"""Largest ``--max-spots``: the spot arrays of every image are padded to the capacity
(n_images × max_spots × 4 B per column), and indexing reads at most a few hundred spots
(``index.fft.max_spots`` 400, ``index.ffbidx.max_spots`` 200). The 3D joining of rotation
data takes every filtered spot through its own uncapped path
(:meth:`jfx.spotfind.find.ThresholdSpotFinder.select`), not through this setting."""


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
        low_resolution_A: spots at d above this are dropped (Å, ``--spot-low-resolution``);
            ``None`` (default) = no limit.
        max_spots: spots kept per image (``--max-spots``, default 250, Jungfraujoch's),
            1 … :data:`MAX_SPOTS_LIMIT` (10 000; the spot arrays are padded to it).
        keep: which spots are kept when more than ``max_spots`` are found
            (``--spot-keep``): ``strongest`` (default: largest background-subtracted
            intensity first), ``stratified`` (the strongest of each of 10 equal-count shells
            in 1/d², taken in turn) or ``lowest_resolution`` (largest d first, Jungfraujoch's
            rule; on real frames it keeps the beamstop edge and the scatter next to the beam).
        window: side of the square local-statistics window (px, odd, 3…181; default 31).
        min_pixels: spots with fewer strong pixels are dropped (``--spot-min-pixels``,
            default 2: single hot pixels, zingers and Poisson tails of the background are
            single pixels; DIALS's ``min_spot_size`` is 3 for pixel-array detectors).
        max_separation_px: spots whose brightest pixel lies further than this from the
            centroid are dropped (px, default 2, as DIALS's ``max_separation``; ``None`` =
            off): streaks along shadow edges, merged artefacts.
        max_background_step: spots whose relative background step
            (:func:`jfx.spotfind.filters.background_step`: the background changes by this
            fraction of its level across ±8 px) exceeds this are dropped (default 1.0;
            ``None`` = off): the edges of the beamstop shadow and of its arm.
        beam_guard: drop spots inside the beamstop shadow / direct-beam scatter region found
            per frame from the radial background profile (:class:`jfx.spotfind.filters.
            BeamGuard`; default True). Frames without such a region lose nothing.
        beam_guard_radius_px: how far from the beam centre the guard looks (px, default 150;
            the reference level comes from 150…225 px).
        beam_guard_factor: an annulus whose median background is above factor × or below
            1/factor × the reference level is part of the region (default 3).
        beam_guard_margin_px: added to the region's radius (px, default 15 = half the
            statistics window, which straddles the region's edge).
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
    low_resolution_A: float | None = setting(
        None, positive=True, label="spot low-resolution limit (--spot-low-resolution)")
    max_spots: int = setting(250, minimum=1, maximum=MAX_SPOTS_LIMIT,
                             label="max spots (--max-spots)")
    keep: str = setting("strongest", choices=KEEP_CHOICES, label="spot keep rule (--spot-keep)")
    window: int = setting(31, minimum=3, maximum=181)
    min_pixels: int = setting(2, minimum=1, label="minimum spot size (--spot-min-pixels)")
    max_pixels: int = setting(1000, minimum=1)
    ice_ring_width_invA: float = setting(0.005, positive=True)
    drop_ice_rings: bool = False
    centroid_grow_px: int = setting(1, minimum=0)
    kernel: str = setting("auto", choices=KERNEL_CHOICES)
    max_separation_px: float | None = setting(2.0, positive=True)
    max_background_step: float | None = setting(1.0, positive=True)
    beam_guard: bool = True
    beam_guard_radius_px: float = setting(150.0, positive=True)
    beam_guard_factor: float = setting(3.0, minimum=1.0)
    beam_guard_margin_px: float = setting(15.0, minimum=0.0)

    def create(self, geometry: Geometry, pixel_mask: np.ndarray | None,
               error_value: int | None, saturation_value: float | None,
               d_map: np.ndarray | None = None) -> ThresholdSpotFinder:
        """The per-dataset :class:`jfx.spotfind.find.ThresholdSpotFinder`."""
        from jfx.spotfind.find import ThresholdSpotFinder

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

"""Spot-finding settings (config group ``spotfind``; ``--spot-*`` and ``--max-spots``)."""

from __future__ import annotations

import dataclasses

from jfx.validate import as_bool, as_choice, as_float, as_int

KEEP_CHOICES = ("lowest_resolution", "strongest")
KERNEL_CHOICES = ("auto", "dense", "sparse")


@dataclasses.dataclass(frozen=True)
class ThresholdSpotFinderSettings:
    """Local-threshold spot finder (jfjoch's CPU/GPU spot finder).

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

    sigma: float = 3.0
    threshold: float = 10.0
    high_resolution_A: float | None = 1.5
    low_resolution_A: float | None = None
    max_spots: int = 250
    keep: str = "lowest_resolution"
    window: int = 31
    min_pixels: int = 1
    max_pixels: int = 1000
    ice_ring_width_invA: float = 0.005
    drop_ice_rings: bool = False
    centroid_grow_px: int = 1
    kernel: str = "auto"

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "sigma", as_float("spot sigma (--spot-sigma)", self.sigma, positive=True))
        s(self, "threshold", as_float("spot threshold (--spot-threshold)", self.threshold,
                                      minimum=0.0))
        s(self, "high_resolution_A", as_float(
            "spot high-resolution limit (--spot-high-resolution)", self.high_resolution_A,
            positive=True, allow_none=True))
        s(self, "low_resolution_A", as_float("spot low-resolution limit", self.low_resolution_A,
                                             positive=True, allow_none=True))
        s(self, "max_spots", as_int("max spots (--max-spots)", self.max_spots, minimum=1))
        s(self, "keep", as_choice("spotfind.keep", self.keep, KEEP_CHOICES))
        s(self, "window", as_int("spotfind.window", self.window, minimum=3))
        if self.window % 2 == 0 or self.window > 181:
            raise ValueError(f"spotfind.window must be odd and <= 181, got {self.window}")
        s(self, "min_pixels", as_int("spotfind.min_pixels", self.min_pixels, minimum=1))
        s(self, "max_pixels", as_int("spotfind.max_pixels", self.max_pixels, minimum=1))
        if self.max_pixels < self.min_pixels:
            raise ValueError(f"spotfind.max_pixels ({self.max_pixels}) must be >= "
                             f"spotfind.min_pixels ({self.min_pixels})")
        s(self, "ice_ring_width_invA", as_float("spotfind.ice_ring_width_invA",
                                                self.ice_ring_width_invA, positive=True))
        s(self, "drop_ice_rings", as_bool("spotfind.drop_ice_rings", self.drop_ice_rings))
        s(self, "centroid_grow_px", as_int("spotfind.centroid_grow_px", self.centroid_grow_px,
                                           minimum=0))
        s(self, "kernel", as_choice("spotfind.kernel", self.kernel, KERNEL_CHOICES))
        if (self.high_resolution_A is not None and self.low_resolution_A is not None
                and self.low_resolution_A <= self.high_resolution_A):
            raise ValueError(
                f"spot low-resolution limit {self.low_resolution_A:g} A must be larger than the "
                f"high-resolution limit {self.high_resolution_A:g} A"
            )

"""Spot-finding settings (config group ``spotfind``; ``--spot-*`` and ``--max-spots``)."""

from __future__ import annotations

import dataclasses

from jfx.config import as_choice, as_float, as_int


KEEP_CHOICES = ("lowest_resolution", "strongest")


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
            ``lowest_resolution`` (largest d first, as jfjoch) or ``strongest``.
    """

    sigma: float = 3.0
    threshold: float = 10.0
    high_resolution_A: float | None = 1.5
    low_resolution_A: float | None = None
    max_spots: int = 250
    keep: str = "lowest_resolution"

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
        if (self.high_resolution_A is not None and self.low_resolution_A is not None
                and self.low_resolution_A <= self.high_resolution_A):
            raise ValueError(
                f"spot low-resolution limit {self.low_resolution_A:g} A must be larger than the "
                f"high-resolution limit {self.high_resolution_A:g} A"
            )

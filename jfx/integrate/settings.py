"""Integration settings (config group ``integrate``; ``--integration-radius``)."""

from __future__ import annotations

import dataclasses

from jfx.validate import as_bool, as_choice, as_float, as_floats, as_int


@dataclasses.dataclass(frozen=True)
class SummationIntegratorSettings:
    """Summation integration in a circular signal box with a background annulus.

    Attributes:
        radii_px: (r1, r2, r3) in px: signal within r1 of the predicted position, background
            in the annulus r2 ≤ r < r3. Default (3, 5, 7). ``--integration-radius r1`` means
            (r1, r1 + 2, r1 + 4). Requires 0 < r1 ≤ r2 < r3.
        enabled: run refinement + prediction + integration after indexing (a second pass
            over the indexed images) and write ``/entry/reflections``.
        background: ``robust_mean`` (outlier-rejecting mean) or ``plane``.
        mosaicity_deg: mosaic spread σ_M used by the prediction (stills: Ewald-offset
            envelope; rotation: rocking-curve width).
        n_sigma: prediction envelope in σ (stills |ε| ≤ n σ_ε; rotation ± n σ_M/|ζ|).
        d_min_A: prediction resolution limit (Å); ``None`` = the detector corner.
        profile: also profile-fit every reflection (``int_prf``; widths per resolution shell
            fitted on each image's strong reflections; :mod:`jfx.integrate.profile`;
            rotation: fitted on the first image of each chunk and used for the chunk).
        threads: frames of a chunk integrated concurrently in this many threads (numpy
            releases the GIL in the array work); 1 = serial.
    """

    radii_px: tuple[float, float, float] = (3.0, 5.0, 7.0)
    enabled: bool = True
    background: str = "robust_mean"
    mosaicity_deg: float = 0.1
    n_sigma: float = 3.0
    d_min_A: float | None = None
    profile: bool = True
    threads: int = 2

    def __post_init__(self) -> None:
        r = as_floats("integration radii (--integration-radius)", self.radii_px)
        if len(r) == 1:
            r = (r[0], r[0] + 2.0, r[0] + 4.0)
        if len(r) != 3:
            raise ValueError(f"integration radii must be r1 or r1,r2,r3 (px), got {len(r)} numbers")
        if not (0 < r[0] <= r[1] < r[2]):
            got = ",".join(f"{v:g}" for v in r)
            raise ValueError(f"integration radii must satisfy 0 < r1 <= r2 < r3, got {got}")
        object.__setattr__(self, "radii_px", r)
        object.__setattr__(self, "enabled", as_bool("integrate.enabled", self.enabled))
        object.__setattr__(self, "background", as_choice(
            "integrate.background", self.background, ("robust_mean", "plane")))
        object.__setattr__(self, "mosaicity_deg", as_float(
            "integrate.mosaicity_deg", self.mosaicity_deg, positive=True))
        object.__setattr__(self, "n_sigma", as_float("integrate.n_sigma", self.n_sigma,
                                                     positive=True))
        object.__setattr__(self, "d_min_A", as_float("integrate.d_min_A", self.d_min_A,
                                                     positive=True, allow_none=True))
        object.__setattr__(self, "profile", as_bool("integrate.profile", self.profile))
        object.__setattr__(self, "threads", as_int("integrate.threads", self.threads,
                                                   minimum=1))

"""Integration settings (config group ``integrate``; ``--integration-radius``)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from jfx.integrate.base import IntegratorSettings
from jfx.validate import setting

if TYPE_CHECKING:  # the integrator needs JAX: imported where it is built (jfx.lazy)
    from jfx.integrate.integrator import SummationIntegrator


@dataclasses.dataclass(frozen=True)
class SummationIntegratorSettings(IntegratorSettings):
    """Summation integration in a circular signal box with a background annulus (option
    ``summation``); the shared stage options are those of
    :class:`jfx.integrate.base.IntegratorSettings`.

    Attributes:
        radii_px: (r1, r2, r3) in px: signal within r1 of the predicted position, background
            in the annulus r2 ≤ r < r3. Default (3, 5, 7). ``--integration-radius r1`` means
            (r1, r1 + 2, r1 + 4). Requires 0 < r1 ≤ r2 < r3.
        background: ``robust_mean`` (outlier-rejecting mean) or ``plane``.
        profile: also profile-fit every reflection (``int_prf``) with empirical reference
            profiles averaged from the strong reflections in a radial / tangential frame per
            resolution shell (:mod:`jfx.integrate.reference`; stills: each image's own;
            rotation: pooled over the frames integrated so far, the current chunk included).
        profile_shells: resolution shells (equal reciprocal volume out to the prediction
            limit) with one reference profile each.
    """

    radii_px: tuple[float, ...] = setting(
        (3.0, 5.0, 7.0), label="integration radii (--integration-radius)")
    background: str = setting("robust_mean", choices=("robust_mean", "plane"))
    profile: bool = True
    profile_shells: int = setting(6, minimum=1, maximum=50)

    def validate(self) -> None:
        r = self.radii_px
        if len(r) == 1:
            r = (r[0], r[0] + 2.0, r[0] + 4.0)
            self._replace_field("radii_px", r)
        if len(r) != 3:
            raise ValueError(f"integration radii must be r1 or r1,r2,r3 (px), got {len(r)} numbers")
        if not (0 < r[0] <= r[1] < r[2]):
            got = ",".join(f"{v:g}" for v in r)
            raise ValueError(f"integration radii must satisfy 0 < r1 <= r2 < r3, got {got}")

    def create(self, pixel_mask: np.ndarray | None, error_value: int | None,
               saturation_value: float | None, *, beam_xy: tuple[float, float] | None = None,
               d_min_A: float | None = None) -> SummationIntegrator:
        """The per-dataset :class:`jfx.integrate.integrator.SummationIntegrator` (pixels from
        :meth:`trusted_saturation` on count as saturated; beam centre (px) and prediction
        limit (Å) fix the reference profiles' frame and shells)."""
        from jfx.integrate.integrator import SummationIntegrator

        return SummationIntegrator(radii_px=self.radii_px, background=self.background,
                                   profile=self.profile, mask=pixel_mask,
                                   error_value=error_value,
                                   saturation_value=self.trusted_saturation(saturation_value),
                                   max_masked_fraction=self.max_masked_fraction,
                                   profile_shells=self.profile_shells, beam_xy=beam_xy,
                                   d_min_A=d_min_A)

"""The per-dataset summation (+ profile-fitting) integrator built by
:meth:`jfx.integrate.settings.SummationIntegratorSettings.create`."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jfx.integrate.profile import integrate_profile
from jfx.integrate.summation import integrate_frame


@dataclasses.dataclass(frozen=True)
class SummationIntegrator:
    """Summation (+ profile fitting) of rows at given positions on one frame.

    Attributes:
        radii_px: (r1, r2, r3) signal radius and background annulus (px).
        background: ``robust_mean`` | ``plane``.
        profile: also profile-fit (``int_prf``).
        mask: (ny, nx) bool pixel mask (True = invalid) or None.
        error_value, saturation_value: special pixel values (None = none); pixels at or
            above ``saturation_value`` are overloaded.
        max_masked_fraction: ``MASKED_FRACTION`` above this fraction of bad disc pixels.
    """

    radii_px: tuple[float, float, float]
    background: str
    profile: bool
    mask: np.ndarray | None
    error_value: int | None
    saturation_value: float | None
    max_masked_fraction: float = 1.0

    def __call__(self, frame: np.ndarray, x: np.ndarray, y: np.ndarray, d: np.ndarray,
                 widths: dict[str, np.ndarray] | None = None) -> tuple[Any, Any, Any]:
        """(summation result, (int_prf, int_prf_var, int_prf_var_bg) or None, fitted widths or
        None). With
        ``widths`` the profile widths are given, else fitted on this frame."""
        r = integrate_frame(frame, self.mask, x, y, None, self.radii_px,
                            error_value=self.error_value, saturation_value=self.saturation_value,
                            background=self.background,
                            max_masked_fraction=self.max_masked_fraction)
        if not (self.profile and len(x)):
            return r, None, None
        try:
            p = integrate_profile(frame, self.mask, x, y, None, d, self.radii_px, summation=r,
                                  error_value=self.error_value,
                                  saturation_value=self.saturation_value, **(widths or {}))
        except ValueError:  # too few strong reflections on this image to fit widths
            return r, None, None
        fitted = None
        if widths is None and np.any(np.isfinite(p.shell_sigma_px)):
            fitted = {"shell_sigma_px": np.asarray(p.shell_sigma_px),
                      "shell_edges_invd2": np.asarray(p.shell_edges_invd2)}
        return r, (np.asarray(p.intensity), np.asarray(p.variance),
                   np.asarray(p.variance_bg)), fitted

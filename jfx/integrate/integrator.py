"""The per-dataset summation (+ profile-fitting) integrator built by
:meth:`jfx.integrate.settings.SummationIntegratorSettings.create`."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jfx.integrate import reference as ref_mod
from jfx.integrate.summation import integrate_frame


@dataclasses.dataclass(frozen=True)
class SummationIntegrator:
    """Summation (+ profile fitting with empirical reference profiles,
    :mod:`jfx.integrate.reference`) of rows at given positions on one frame.

    Two phases per frame so that frames can pool their reference data: :meth:`begin`
    (summation, disc pixels, this frame's reference deposit) and :meth:`finish` (profile fit
    with a reference, e.g. the sum of several frames' deposits). Calling the integrator does
    both with the frame's own deposit.

    Attributes:
        radii_px: (r1, r2, r3) signal radius and background annulus (px).
        background: ``robust_mean`` | ``plane``.
        profile: also profile-fit (``int_prf``).
        mask: (ny, nx) bool pixel mask (True = invalid) or None.
        error_value, saturation_value: special pixel values (None = none); pixels at or
            above ``saturation_value`` are overloaded.
        max_masked_fraction: ``MASKED_FRACTION`` above this fraction of bad disc pixels.
        profile_shells: resolution shells of the reference profiles.
        beam_xy: (bx, by) beam centre (px): the reference profiles' radial frame (None: x/y).
        d_min_A: resolution limit (Å) that the shells span (None: the frame's rows).
    """

    radii_px: tuple[float, float, float]
    background: str
    profile: bool
    mask: np.ndarray | None
    error_value: int | None
    saturation_value: float | None
    max_masked_fraction: float = 1.0
    profile_shells: int = 6
    beam_xy: tuple[float, float] | None = None
    d_min_A: float | None = None

    def begin(self, frame: np.ndarray, x: np.ndarray, y: np.ndarray, d: np.ndarray
              ) -> tuple[Any, Any, Any]:
        """(summation result, gathered disc pixels or None, this frame's
        :class:`jfx.integrate.reference.ReferenceData` or None)."""
        r = integrate_frame(frame, self.mask, x, y, None, self.radii_px,
                            error_value=self.error_value, saturation_value=self.saturation_value,
                            background=self.background,
                            max_masked_fraction=self.max_masked_fraction)
        if not (self.profile and len(x)):
            return r, None, None
        d = np.asarray(d, np.float64)
        d_min = self.d_min_A
        if d_min is None:
            fin = d[np.isfinite(d) & (d > 0)]
            if fin.size == 0:
                return r, None, None
            d_min = float(fin.min())
        edges = ref_mod.shell_edges(d_min, self.profile_shells)
        mask = self.mask if self.mask is not None else np.zeros(np.shape(frame), bool)
        g = ref_mod.gather(np.asarray(frame), mask, x, y, d, self.radii_px, r, edges,
                           beam_xy=self.beam_xy, error_value=self.error_value,
                           saturation_value=self.saturation_value)
        return r, g, ref_mod.deposit(g, edges, self.radii_px[0])

    @staticmethod
    def finish(gathered: Any, reference: Any) -> tuple[np.ndarray, ...] | None:
        """(int_prf, int_prf_var, int_prf_var_bg, var_pix0, s_a) of the gathered rows
        (:func:`jfx.integrate.reference.fit`) with ``reference`` (pooled
        :class:`jfx.integrate.reference.ReferenceData`); None without a reference."""
        if gathered is None or reference is None or not np.any(reference.n_strong):
            return None
        P = ref_mod.reference_profiles(reference)
        return ref_mod.fit(gathered, P, reference.step_px)

    def __call__(self, frame: np.ndarray, x: np.ndarray, y: np.ndarray, d: np.ndarray
                 ) -> tuple[Any, Any]:
        """(summation result, (int_prf, int_prf_var, int_prf_var_bg) or None) with this
        frame's own reference profiles."""
        r, g, dep = self.begin(frame, x, y, d)
        out = self.finish(g, dep)
        return r, None if out is None else out[:3]

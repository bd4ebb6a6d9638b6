"""Azimuthal-integration settings (config group ``azint``; :mod:`jfx.azint.integrator`)."""

from __future__ import annotations

import dataclasses

from jfx.validate import Settings, setting


@dataclasses.dataclass(frozen=True)
class AzintSettings(Settings):
    """Azimuthal-integration settings (config group ``azint``, option ``default``).

    Attributes:
        enabled: run azimuthal integration in ``-X None`` and later runs.
        q_spacing_invA: bin width in q (Å⁻¹, q = 4π sin θ/λ), > 0; default 0.02.
        low_q_invA: lower edge of the first bin (Å⁻¹), ≥ 0; default 0.
        high_q_invA: upper limit (Å⁻¹); ``None`` = the detector edge (largest pixel q).
        n_azimuthal_bins: azimuth bins of the optional 2D result (≤ 3600); 0 = 1D only.
        solid_angle: apply the solid-angle correction.
        polarization: apply the polarisation correction (beam polarisation from the input).
    """

    config_node = "azint"

    enabled: bool = True
    q_spacing_invA: float = setting(0.02, positive=True)
    low_q_invA: float = setting(0.0, minimum=0.0)
    high_q_invA: float | None = setting(None, positive=True)
    n_azimuthal_bins: int = setting(0, minimum=0, maximum=3600)
    solid_angle: bool = True
    polarization: bool = True

    def validate(self) -> None:
        if self.high_q_invA is not None and self.high_q_invA <= self.low_q_invA:
            raise ValueError(f"azint.high_q_invA {self.high_q_invA:g} must be larger than "
                             f"azint.low_q_invA {self.low_q_invA:g}")

"""Azimuthal-integration settings (config node ``azint``; :mod:`jfx.azint.integrator`)."""

from __future__ import annotations

import dataclasses

from jfx.validate import as_bool, as_float, as_int


@dataclasses.dataclass(frozen=True)
class AzintSettings:
    """Azimuthal-integration settings (config node ``azint``).

    Attributes:
        enabled: run azimuthal integration in ``-X None`` and later runs.
        q_spacing_invA: bin width in q (Å⁻¹, q = 4π sin θ/λ), > 0; default 0.02.
        low_q_invA: lower edge of the first bin (Å⁻¹), ≥ 0; default 0.
        high_q_invA: upper limit (Å⁻¹); ``None`` = the detector edge (largest pixel q).
        n_azimuthal_bins: azimuth bins of the optional 2D result; 0 = 1D only.
        solid_angle: apply the solid-angle correction.
        polarization: apply the polarisation correction (beam polarisation from the input).
    """

    enabled: bool = True
    q_spacing_invA: float = 0.02
    low_q_invA: float = 0.0
    high_q_invA: float | None = None
    n_azimuthal_bins: int = 0
    solid_angle: bool = True
    polarization: bool = True

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "enabled", as_bool("azint.enabled", self.enabled))
        s(self, "q_spacing_invA", as_float("azint.q_spacing_invA", self.q_spacing_invA,
                                           positive=True))
        s(self, "low_q_invA", as_float("azint.low_q_invA", self.low_q_invA, minimum=0.0))
        s(self, "high_q_invA", as_float("azint.high_q_invA", self.high_q_invA, positive=True,
                                        allow_none=True))
        s(self, "n_azimuthal_bins", as_int("azint.n_azimuthal_bins", self.n_azimuthal_bins,
                                           minimum=0))
        s(self, "solid_angle", as_bool("azint.solid_angle", self.solid_angle))
        s(self, "polarization", as_bool("azint.polarization", self.polarization))
        if self.high_q_invA is not None and self.high_q_invA <= self.low_q_invA:
            raise ValueError(f"azint.high_q_invA {self.high_q_invA:g} must be larger than "
                             f"azint.low_q_invA {self.low_q_invA:g}")
        if self.n_azimuthal_bins > 3600:
            raise ValueError(f"azint.n_azimuthal_bins must be <= 3600, got "
                             f"{self.n_azimuthal_bins}")

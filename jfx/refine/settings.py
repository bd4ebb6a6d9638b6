"""Geometry-refinement settings (config group ``refine``; ``-r``) and pixel refinement."""

from __future__ import annotations

import dataclasses

from jfx.validate import as_choice, as_float


PRESETS = ("none", "orientation", "beam_and_lattice", "pixelrefine")
PARAMETERS = (
    "beam.wavelength_A",
    "beam.bandwidth_fwhm",
    "detector.distance_mm",
    "detector.beam_center_px",
    "detector.orientation",
    "lattice.orientation",
    "lattice.cell",
    "crystal.mosaicity",
)
"""Parameter leaves a preset may set free (dotted paths into Geometry / Lattice / profile)."""
BEAM_AND_LATTICE_FREE = ("detector.beam_center_px", "detector.distance_mm",
                         "lattice.orientation", "lattice.cell")
"""Free leaves of the default ``beam_and_lattice`` preset (conf/refine/beam_and_lattice.yaml)."""


@dataclasses.dataclass(frozen=True)
class RefineSettings:
    """A refinement preset: which parameter leaves are free, and the solver.

    Attributes:
        preset: ``none`` | ``orientation`` | ``beam_and_lattice`` (default) | ``pixelrefine``.
        free: the free leaves, each one of :data:`PARAMETERS` (empty for ``none``).
        scan_varying_deg: rotation data: after the scan-static refinement, refine the crystal
            orientation again in blocks of this many degrees of the sweep (scan-varying
            orientation, piecewise constant; ``None`` = scan-static only). Ignored for stills
            and without a free ``lattice.orientation``.
        solver: refinement solver, ``lm`` (Levenberg–Marquardt in JAX, default) or ``lbfgs``
            (optax); :mod:`jfx.solvers`.
    """

    preset: str = "beam_and_lattice"
    free: tuple[str, ...] = BEAM_AND_LATTICE_FREE
    scan_varying_deg: float | None = None
    solver: str = "lm"

    def __post_init__(self) -> None:
        object.__setattr__(self, "preset", as_choice("refinement (-r)", self.preset, PRESETS))
        free = tuple(str(p) for p in (self.free or ()))
        for p in free:
            if p not in PARAMETERS:
                raise ValueError(
                    f"unknown refinement parameter {p!r} (known: {', '.join(PARAMETERS)})")
        if len(set(free)) != len(free):
            raise ValueError(f"refinement parameters listed twice: {list(free)}")
        if self.preset == "none" and free:
            raise ValueError("refinement preset 'none' cannot have free parameters")
        object.__setattr__(self, "free", free)
        object.__setattr__(self, "scan_varying_deg", as_float(
            "refine.scan_varying_deg", self.scan_varying_deg, positive=True, allow_none=True))
        object.__setattr__(self, "solver", as_choice("refine.solver", self.solver,
                                                     ("lm", "lbfgs")))


@dataclasses.dataclass(frozen=True)
class PixelRefineSettings:
    """Reference-driven pixel refinement (config node ``pixelrefine``; ``-r pixelrefine``).

    Attributes:
        bandwidth_fwhm: relative X-ray bandwidth FWHM (``--bandwidth``, e.g. 0.01);
            ``None`` = from the master file, or 0 (monochromatic) when absent.
        profile_multiplier: scale factor of the measured tangential profile width
            (``--profile-multiplier``, default 6), > 0.
    """

    bandwidth_fwhm: float | None = None
    profile_multiplier: float = 6.0

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "bandwidth_fwhm", as_float("bandwidth (--bandwidth)", self.bandwidth_fwhm,
                                           minimum=0.0, maximum=1.0, allow_none=True))
        s(self, "profile_multiplier", as_float("profile multiplier (--profile-multiplier)",
                                               self.profile_multiplier, positive=True))

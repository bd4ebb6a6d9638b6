"""Geometry-refinement settings (config group ``refine``; ``-r``) and pixel refinement.

Each ``-r`` preset is its own class (named by ``conf/refine/<preset>.yaml``): the presets
differ in their default free parameters and in what the pipeline does with them
(:attr:`RefineSettings.enabled`, :attr:`RefineSettings.reference_driven`,
:attr:`RefineSettings.implemented`).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

from jfx.validate import Settings, setting

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
"""Free leaves of the default ``beam_and_lattice`` preset."""


@dataclasses.dataclass(frozen=True)
class RefineSettings(Settings):
    """Which parameter leaves are free, and the solver (the base of the ``-r`` presets; the
    refinement library takes any instance).

    Attributes:
        free: the free leaves, each one of :data:`PARAMETERS` (default: those of
            ``beam_and_lattice``).
        scan_varying_deg: rotation data: after the scan-static refinement, refine the crystal
            orientation again in blocks of this many degrees of the sweep (scan-varying
            orientation, piecewise constant; ``None`` = scan-static only). Ignored for stills
            and without a free ``lattice.orientation``.
        solver: refinement solver, ``lm`` (Levenberg–Marquardt in JAX, default) or ``lbfgs``
            (optax); :mod:`jfx.solvers`.
        outlier_probability: rotation data: after the scan-static macro-cycles, spots whose
            residual vector (Δx, Δy, Δφ) lies beyond this χ²₃ quantile of the robust
            Mahalanobis distance are rejected and the sweep is refined once more without
            them, as DIALS' ``mcd`` outlier rejection (threshold probability 0.975, the
            default; :mod:`jfx.refine.outliers`); the rmsds are those of the spots kept.
            ``None`` = no rejection (the Huber loss alone down-weights outliers).

    Class attributes: ``name`` (the ``-r`` preset), ``enabled`` (the pipeline refines at
    all), ``reference_driven`` (needs
    a reference MTZ, ``-z``, and takes ``--profile-multiplier``), ``implemented``.
    """

    config_node = "refine"
    name: ClassVar[str] = ""
    enabled: ClassVar[bool] = True
    reference_driven: ClassVar[bool] = False
    implemented: ClassVar[bool] = True

    free: tuple[str, ...] = BEAM_AND_LATTICE_FREE
    scan_varying_deg: float | None = setting(None, positive=True)
    solver: str = setting("lm", choices=("lm", "lbfgs"))
    outlier_probability: float | None = setting(0.975, minimum=0.5, maximum=0.9999)

    def validate(self) -> None:
        for p in self.free:
            if p not in PARAMETERS:
                raise ValueError(
                    f"unknown refinement parameter {p!r} (known: {', '.join(PARAMETERS)})")
        if len(set(self.free)) != len(self.free):
            raise ValueError(f"refinement parameters listed twice: {list(self.free)}")


@dataclasses.dataclass(frozen=True)
class NoRefinement(RefineSettings):
    """``-r none``: no geometry refinement (nothing may be free)."""

    name = "none"
    enabled: ClassVar[bool] = False

    free: tuple[str, ...] = ()

    def validate(self) -> None:
        super().validate()
        if self.free:
            raise ValueError("refinement preset 'none' cannot have free parameters")


@dataclasses.dataclass(frozen=True)
class OrientationRefinement(RefineSettings):
    """``-r orientation``: the crystal orientation only."""

    name = "orientation"

    free: tuple[str, ...] = ("lattice.orientation",)


@dataclasses.dataclass(frozen=True)
class BeamAndLatticeRefinement(RefineSettings):
    """``-r beam_and_lattice`` (default): beam centre, distance, orientation and cell."""

    name = "beam_and_lattice"

    free: tuple[str, ...] = BEAM_AND_LATTICE_FREE


@dataclasses.dataclass(frozen=True)
class PixelRefinement(RefineSettings):
    """``-r pixelrefine``: reference-driven refinement of every still against the pixels of
    its reflections, and integration from the refined model (needs ``-z``;
    :mod:`jfx.pixelrefine`, docs/pixelrefine.md). The spot-based stills refinement runs
    first with the geometric leaves of ``free``; ``beam.bandwidth_fwhm`` and
    ``crystal.mosaicity`` are the pixel model's (:class:`PixelRefineSettings` and the
    ``pixel_*`` config groups)."""

    name = "pixelrefine"
    reference_driven: ClassVar[bool] = True

    free: tuple[str, ...] = BEAM_AND_LATTICE_FREE + ("beam.bandwidth_fwhm",
                                                     "crystal.mosaicity")


@dataclasses.dataclass(frozen=True)
class PixelRefineSettings(Settings):
    """Beam bandwidth and the pixel refinement (config group ``pixelrefine``).

    The model's parts are their own config groups: ``pixel_partiality``, ``pixel_profile``,
    ``pixel_background`` (:mod:`jfx.pixelrefine.components`).

    Attributes:
        bandwidth_fwhm: relative X-ray bandwidth FWHM (``--bandwidth``, e.g. 0.01), in
            [0, 1]; replaces the master file's bandwidth for every refinement mode (still
            prediction and partiality); ``None`` = from the master file, or 0
            (monochromatic) when absent.
        profile_multiplier: scale factor of the measured tangential profile width
            (``--profile-multiplier``, default 6), > 0; reference-driven refinement only:
            each reflection is integrated within this many refined tangential widths σ_t of
            its refined position (at most the box, ``integrate.radii_px`` r2).
        reference_sigma: relative error of the reference intensities (σ of the Gaussian
            prior on each spot's amplitude relative to the reference model,
            :mod:`jfx.pixelrefine.fit`), > 0.
        max_fit_reflections: a still's fit uses at most this many reflections (those with
            the largest expected photons); every predicted row is integrated.
        min_fit_reflections: stills with fewer fit reflections keep the spot-refined model
            (status ``too few reflections``).
        max_iter: Levenberg–Marquardt iterations of the full fit.
        solver: ``lm`` (default) or ``lbfgs`` (optax), :mod:`jfx.solvers`.
        pilot_stills: the first this many indexed stills are fitted first (weak priors);
            the medians of their partiality parameters (mosaicity, domain term, bandwidth)
            start every still's fit, with a prior of σ ``population_sigma`` (ln) around
            them — a hierarchical model: crystals differ, but one still's pixels fix its
            rocking-curve width only roughly. 0 = no pilot (each still on its own).
        population_sigma: σ (ln) of the per-still partiality parameters around the
            pilot's medians, > 0.
        cycles: refinement cycles, ≥ 1. After each cycle but the last the data are scaled
            and merged, and the next cycle refines every still again (from its refined
            model) against that merge instead of the reference: the merge of all stills is
            better than a reference from another crystal. Each row's amplitude prior is
            then √(``merged_sigma_floor``² + (σ/I)²) of its merged intensity.
        merged_sigma_floor: floor of the relative uncertainty of a merged intensity used
            as the reference of a later cycle, > 0.
    """

    bandwidth_fwhm: float | None = setting(None, minimum=0.0, maximum=1.0,
                                           label="bandwidth (--bandwidth)")
    profile_multiplier: float = setting(6.0, positive=True,
                                        label="profile multiplier (--profile-multiplier)")
    reference_sigma: float = setting(0.3, positive=True)
    max_fit_reflections: int = setting(256, minimum=8)
    min_fit_reflections: int = setting(20, minimum=3)
    max_iter: int = setting(30, minimum=1)
    solver: str = setting("lm", choices=("lm", "lbfgs"))
    pilot_stills: int = setting(32, minimum=0)
    population_sigma: float = setting(0.1, positive=True)
    cycles: int = setting(2, minimum=1)
    merged_sigma_floor: float = setting(0.05, positive=True)

"""Scaling/merging settings (node ``scale``) and the partiality model (group ``partiality``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jfx.validate import as_bool, as_choice, as_float, as_int, as_str


PARTIALITY_MODELS = ("fixed", "rot", "unity")
OUTPUT_FORMATS = ("mtz", "cif", "txt")
SOLVERS = ("lm", "lbfgs")
LIKELIHOODS = ("normal", "huber", "student_t")
INTENSITIES = ("prf", "sum")


@dataclasses.dataclass(frozen=True)
class PartialitySettings:
    """Partiality model (``-P``): ``fixed`` (default), ``rot`` (rotation) or ``unity``.

    The models themselves are in :mod:`jfx.physics.partiality`.
    """

    model: str = "fixed"

    def __post_init__(self) -> None:
        object.__setattr__(self, "model", as_choice("partiality model (-P)", self.model,
                                                    PARTIALITY_MODELS))


@dataclasses.dataclass(frozen=True)
class ScaleSettings:
    """Scaling and merging options.

    Attributes:
        merge: scale and merge (``-M``).
        anomalous: keep Friedel pairs separate (``-A``).
        refine_bfactor: refine a per-image B-factor (``-B``).
        refine_wedge: refine the per-image rotation wedge (``-w``).
        wedge_start_deg: starting wedge (deg, ``-w=v``); ``None`` = the model's default.
        high_resolution_A: high-resolution limit for scaling (Å, ``--scaling-high-resolution``).
        min_partiality: minimum partiality to accept a reflection, in [0, 1] (default 0.02).
        reject_outliers: per-observation rejection at N σ from the per-reflection median
            (``--reject-outliers``); ``None`` = off.
        reject_delta_cchalf: drop images with ΔCC1/2 below mean − N·stddev; ``None`` = off.
        min_image_cc_percent: per-image CC limit in percent (``--min-image-cc``); ``None`` = off.
        iterations: scaling iterations without reference data (default 3), ≥ 1.
        output_format: merged-reflection format ``mtz`` | ``cif`` | ``txt`` (``--scaling-output``).
        reference_mtz: reference MTZ (``-z``); implies merging. Must exist.
        solver: ``lm`` (alternating per-image Levenberg–Marquardt, vmapped; default) or
            ``lbfgs`` (joint L-BFGS of all parameters, optax).
        intensity: ``prf`` (profile-fitted where available, else summation; default) or
            ``sum``.
        likelihood: error distribution of an observation: ``normal`` (weighted least
            squares, default), ``huber`` or ``student_t`` (robust, heavy tails).
        n_shells: resolution shells of the statistics table.
        resolve_ambiguity: resolve indexing ambiguities between stills / runs when the
            lattice has more symmetry than the point group.
    """

    merge: bool = False
    anomalous: bool = False
    refine_bfactor: bool = False
    refine_wedge: bool = False
    wedge_start_deg: float | None = None
    high_resolution_A: float | None = None
    min_partiality: float = 0.02
    reject_outliers: float | None = None
    reject_delta_cchalf: float | None = None
    min_image_cc_percent: float | None = None
    iterations: int = 3
    output_format: str = "mtz"
    reference_mtz: str | None = None
    solver: str = "lm"
    intensity: str = "prf"
    likelihood: str = "normal"
    n_shells: int = 10
    resolve_ambiguity: bool = True

    def __post_init__(self) -> None:
        s = object.__setattr__
        for name in ("merge", "anomalous", "refine_bfactor", "refine_wedge"):
            s(self, name, as_bool(f"scale.{name}", getattr(self, name)))
        s(self, "wedge_start_deg", as_float("wedge start (-w)", self.wedge_start_deg,
                                            minimum=0.0, allow_none=True))
        s(self, "high_resolution_A", as_float(
            "scaling high-resolution limit (--scaling-high-resolution)", self.high_resolution_A,
            positive=True, allow_none=True))
        s(self, "min_partiality", as_float("minimum partiality (--min-partiality)",
                                           self.min_partiality, minimum=0.0, maximum=1.0))
        s(self, "reject_outliers", as_float("outlier rejection (--reject-outliers)",
                                            self.reject_outliers, positive=True, allow_none=True))
        s(self, "reject_delta_cchalf", as_float(
            "delta-CC1/2 rejection (--reject-delta-cchalf)", self.reject_delta_cchalf,
            positive=True, allow_none=True))
        s(self, "min_image_cc_percent", as_float("minimum image CC (--min-image-cc)",
                                                 self.min_image_cc_percent, minimum=-100.0,
                                                 maximum=100.0, allow_none=True))
        s(self, "iterations", as_int("scaling iterations (--scaling-iterations)", self.iterations,
                                     minimum=1))
        s(self, "output_format", as_choice("scaling output (--scaling-output)", self.output_format,
                                           OUTPUT_FORMATS))
        s(self, "solver", as_choice("scale.solver", self.solver, SOLVERS))
        s(self, "intensity", as_choice("scale.intensity", self.intensity, INTENSITIES))
        s(self, "likelihood", as_choice("scale.likelihood", self.likelihood, LIKELIHOODS))
        s(self, "n_shells", as_int("scale.n_shells", self.n_shells, minimum=1))
        s(self, "resolve_ambiguity", as_bool("scale.resolve_ambiguity", self.resolve_ambiguity))
        ref = as_str("reference MTZ (-z)", self.reference_mtz, allow_none=True)
        if ref is not None and not Path(ref).is_file():
            raise ValueError(f"reference MTZ not found: {ref}")
        s(self, "reference_mtz", ref)
        if self.wedge_start_deg is not None and not self.refine_wedge:
            s(self, "refine_wedge", True)  # -w=v implies wedge refinement

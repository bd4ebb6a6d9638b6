"""Scaling/merging settings (config group ``scale``).

The partiality model (group ``partiality``, ``-P``) and the likelihood (group
``likelihood``) are strategy objects of their own: :mod:`jfx.scale.partiality`,
:mod:`jfx.scale.likelihood`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jfx.validate import Settings, setting

OUTPUT_FORMATS = ("mtz", "cif", "txt")
SOLVERS = ("lm", "lbfgs")
INTENSITIES = ("prf", "sum")


@dataclasses.dataclass(frozen=True)
class ScaleSettings(Settings):
    """Scaling and merging options (config group ``scale``, option ``default``).

    Attributes:
        merge: scale and merge (``-M``).
        anomalous: keep Friedel pairs separate (``-A``).
        refine_bfactor: refine a per-image B-factor (``-B``).
        refine_wedge: refine the per-image rotation wedge (``-w``).
        wedge_start_deg: starting wedge (deg, ``-w=v``); ``None`` = the model's default.
        high_resolution_A: high-resolution limit for scaling (Å, ``--scaling-high-resolution``).
        min_partiality: minimum partiality to accept a reflection, in [0, 1] (default 0.02).
        min_recorded_fraction: rotation rows recorded to a smaller fraction (the summed
            fraction of the rocking curve inside the sweep, mostly reflections at the sweep's
            ends) are left out, in [0, 1] (default 0.4, dials.scale's
            ``cut_data.partiality_cutoff``): I/F of a thin sliver is dominated by the error of
            F (on a jfx.sim sweep slivers with F = 0.02–0.05 merged at ≈ 0.75× the truth).
        partiality_uncertainty: relative uncertainty κ of the unrecorded part of a rotation
            row recorded to the fraction p: its corrected intensity I/p gets the variance
            (κ (1 − p)/p · I)² at the model intensity (default 0.3; 0 = exact). The rocking
            curve's tails are modelled as a Gaussian; a real one (divergence ⊗ mosaicity) has
            other tails, and for strong reflections that error outweighs counting noise
            (measured on the anomalous sweeps of issue 17, docs/scaling.md).
        reject_outliers: per-observation rejection at N σ from the per-reflection median
            (``--reject-outliers``); ``None`` = off.
        reject_delta_cchalf: drop images with ΔCC1/2 below mean − N·stddev; ``None`` = off.
        min_image_cc_percent: per-image CC limit in percent (``--min-image-cc``); ``None`` = off.
        reject_stills_images: still images (crystals) that do not agree with the merged
            intensities are left out: those whose mean squared normalised deviation
            ⟨((I − ⟨I_h⟩)/σ)²⟩ exceeds the median over the stills by more than N robust
            standard deviations (1.4826·MAD) and 3 (:func:`jfx.scale.reject.image_chi2`);
            from the second scaling iteration on. Default 5; ``None`` = off. Rotation
            images are not tested.
        iterations: scaling iterations without reference data (default 3), ≥ 1.
        output_format: merged-reflection format ``mtz`` | ``cif`` | ``txt`` (``--scaling-output``).
        reference_mtz: reference MTZ (``-z``); implies merging. Must exist.
        solver: ``lm`` (alternating per-image Levenberg–Marquardt, vmapped; default) or
            ``lbfgs`` (joint L-BFGS of all parameters, optax).
        intensity: ``prf`` (profile-fitted where available, else summation; default) or
            ``sum``.
        n_shells: resolution shells of the statistics table.
        resolve_ambiguity: resolve indexing ambiguities between stills / runs when the
            lattice has more symmetry than the point group.
        include_overloads: also scale and merge reflections flagged ``OVERLOADED`` (a
            saturated / overloaded pixel in the integration region: their intensity is a
            lower bound); default False leaves them out (``--include-overloads``). Rows
            flagged ``MASKED_FRACTION`` (``integrate.max_masked_fraction``) are always left out.
    """

    config_node = "scale"

    merge: bool = False
    anomalous: bool = False
    refine_bfactor: bool = False
    refine_wedge: bool = False
    wedge_start_deg: float | None = setting(None, minimum=0.0, label="wedge start (-w)")
    high_resolution_A: float | None = setting(
        None, positive=True,
        label="scaling high-resolution limit (--scaling-high-resolution)")
    min_partiality: float = setting(0.02, minimum=0.0, maximum=1.0,
                                    label="minimum partiality (--min-partiality)")
    min_recorded_fraction: float = setting(0.4, minimum=0.0, maximum=1.0)
    partiality_uncertainty: float = setting(0.3, minimum=0.0)
    reject_outliers: float | None = setting(None, positive=True,
                                            label="outlier rejection (--reject-outliers)")
    reject_delta_cchalf: float | None = setting(
        None, positive=True, label="delta-CC1/2 rejection (--reject-delta-cchalf)")
    min_image_cc_percent: float | None = setting(None, minimum=-100.0, maximum=100.0,
                                                 label="minimum image CC (--min-image-cc)")
    reject_stills_images: float | None = setting(5.0, positive=True)
    iterations: int = setting(3, minimum=1, label="scaling iterations (--scaling-iterations)")
    output_format: str = setting("mtz", choices=OUTPUT_FORMATS,
                                 label="scaling output (--scaling-output)")
    reference_mtz: str | None = setting(None, label="reference MTZ (-z)")
    solver: str = setting("lm", choices=SOLVERS)
    intensity: str = setting("prf", choices=INTENSITIES)
    n_shells: int = setting(10, minimum=1)
    resolve_ambiguity: bool = True
    include_overloads: bool = False

    def validate(self) -> None:
        if self.reference_mtz is not None and not Path(self.reference_mtz).is_file():
            raise ValueError(f"reference MTZ not found: {self.reference_mtz}")
        if self.wedge_start_deg is not None and not self.refine_wedge:
            self._replace_field("refine_wedge", True)  # -w=v implies wedge refinement

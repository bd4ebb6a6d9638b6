"""The scaling verb: integrated reflections of one or more runs → scaled, merged intensities.

:func:`scale_merge` composes the pieces of :mod:`jfx.scale` in the order an experienced
crystallographer expects (Evans 2006, Aimless; Kabsch 2010, XSCALE; White 2016, partialator):

1. usable rows (integrated, finite, positive variance), images numbered per run;
2. indexing-ambiguity resolution when the lattice has more symmetry than the point group
   (stills per image, rotation runs per run; against the reference when one is given,
   otherwise self-consistently, :mod:`jfx.scale.ambiguity`);
3. ASU mapping (:mod:`jfx.symmetry.asu`, gemmi), the resolution limit, min. partiality;
4. iterations of the model fit (:func:`jfx.scale.fit.fit_scales`: per-image G (+B, wedge),
   global mosaicity, error model), each followed by the rejections (per-observation outliers
   vs the per-reflection median, ``--min-image-cc``, ΔCC½); ``iterations`` of them (with a
   reference too: the error model and the robust weights need the fitted scales);
5. the final merge (anomalous: I(+)/I(−)) and the statistics per resolution shell.

Pure core: no files, no printing; the shell writes the outputs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from jfx.scale.base import Likelihood, PartialityModel, ScaleModel
from jfx.scale.settings import ScaleSettings
from jfx.symmetry import groups


@dataclasses.dataclass(frozen=True)
class RunData:
    """The integrated reflections of one run (one ``_process.h5``).

    Attributes:
        table: ``/entry/reflections`` columns (numpy arrays, one row per observation).
        wavelength_A: λ (Å).
        phi_start_deg, phi_increment_deg: scan of a rotation run (deg; image k spans
            [start + k·inc, start + (k+1)·inc]); ``None`` for stills.
        cell: (6,) unit cell (Å, deg) of the indexed lattice(s), or ``None``.
        space_group: the run's space group number, or ``None``.
        bandwidth_fwhm: relative bandwidth (stills partiality).
        beam_center_px: (x, y) beam centre of the (refined) detector; gives the stills'
            Ewald-offset derivatives for the orientation post-refinement of ``-P rot``.
        name: label (file name) for messages.
        lab_frame: the run's detector and goniometer in the lab frame
            (:class:`jfx.physics.rotation.LabFrame`): the crystal-frame beam directions of
            the absorption surface (``scale_model=physical``); None = unknown (no surface).
        partiality_refined: still partialities refined against the pixels (``-r
            pixelrefine``): ``-P auto`` keeps them (``fixed``) instead of post-refining.
    """

    table: dict[str, np.ndarray]
    wavelength_A: float
    phi_start_deg: float | None = None
    phi_increment_deg: float | None = None
    cell: np.ndarray | None = None
    space_group: int | None = None
    bandwidth_fwhm: float = 0.0
    beam_center_px: tuple[float, float] | None = None
    name: str = "run"
    lab_frame: Any = None
    partiality_refined: bool = False

    @property
    def is_rotation(self) -> bool:
        return self.phi_increment_deg is not None and self.phi_increment_deg != 0.0

    @property
    def post_refinable_stills(self) -> bool:
        """Still run whose orientation and partiality scaling may post-refine (a refined
        beam centre, partialities not already refined against the pixels)."""
        return (not self.is_rotation and self.beam_center_px is not None
                and not self.partiality_refined)


@dataclasses.dataclass(frozen=True)
class Reference:
    """Reference intensities (``-z``): ``hkl`` (m, 3), ``intensity`` (m,), cell, space group;
    ``sigma`` (m,) their uncertainties where known (a merge of the data themselves, the
    second cycle of ``-r pixelrefine``), else None."""

    hkl: np.ndarray
    intensity: np.ndarray
    cell: np.ndarray | None = None
    space_group: int | None = None
    sigma: np.ndarray | None = None


@dataclasses.dataclass(frozen=True)
class ScalingResult:
    """Everything scaling produced (numpy; written by the shell).

    Attributes:
        merged: :class:`jfx.models.merged.MergedReflections`.
        statistics: :class:`jfx.models.merged.MergingStatistics`.
        images: per image (n_img,) arrays ``run``, ``image`` (image number in its run),
            ``scale``, ``bfactor``, ``wedge_deg``, ``mosaicity_deg``, ``cc`` (image vs merged),
            ``rejected`` (uint8), ``delta_cc_half``, ``ambiguity_op``, ``cell_change``
            (stills ``-P rot``: the post-refined relative cell change of each still, NaN
            otherwise; not written to files).
        iterations: per iteration (no reference) ``{"image", "scale", "bfactor", "cc",
            "rejected"}`` for ``<prefix>_iterN_scale.dat``.
        error_model: (a, b) of σ'² = a²(σ² + (b·I)²).
        mosaicity_deg: refined (or fixed) σ_M, or None (model without one).
        domain_invA: refined stills domain width σ₀ (Å⁻¹, ``-P rot`` on stills), else None.
        stills_profile: ``{"lorentz_fraction": η, "cell_change_rms": rms of the per-still
            cell changes, "log_width_rms": rms of the per-still log width factors}`` of
            ``-P rot`` on stills, else None.
        cell, space_group: the merging cell and space group (number).
        n_obs_total, n_obs_used: observation rows read / used in the final merge.
        n_outliers: observations rejected as outliers; n_rejected_images: images rejected.
        n_overloaded: integrated observations flagged ``OVERLOADED`` (left out unless
            ``include_overloads``); n_masked: left out as ``MASKED_FRACTION``;
            overloads_included: ``include_overloads`` was set.
        ambiguity: one-line description of the ambiguity resolution, or None.
        reference_used: scaled against a reference.
        reference_note: one line when the reference reached too few images to scale them
            (then: scaled without it, merged intensities put on its scale by one factor).
        partiality_model, solver: what ran.
        scale_model: the scale model that ran (``image``, ``physical``);
        scale_model_note: its one-line summary (knots, absorption range), or None.
    """

    merged: Any
    statistics: Any
    images: dict[str, np.ndarray]
    iterations: list[dict[str, np.ndarray]]
    error_model: tuple[float, float]
    mosaicity_deg: float | None
    cell: np.ndarray
    space_group: int
    n_obs_total: int
    n_obs_used: int
    n_outliers: int
    n_rejected_images: int
    ambiguity: str | None
    reference_used: bool
    partiality_model: str
    solver: str
    n_overloaded: int = 0
    n_masked: int = 0
    overloads_included: bool = False
    domain_invA: float | None = None
    stills_profile: dict | None = None
    reference_note: str | None = None
    scale_model: str = "image"
    scale_model_note: str | None = None

    def lines(self) -> list[str]:
        """Console summary (the statistics table is :func:`jfx.io.report.format_table`)."""
        a, b = self.error_model
        out = [f"scaling: {self.n_obs_used} of {self.n_obs_total} observations merged into "
               f"{len(self.merged.hkl)} unique reflections, space group {self.space_group}, "
               f"partiality {self.partiality_model}, scale model {self.scale_model}, "
               f"solver {self.solver}"
               + (", against the reference" if self.reference_used else "")]
        if self.scale_model_note:
            out.append(self.scale_model_note)
        out.append(f"error model: sigma'^2 = a^2 (sigma^2 + (b I)^2), a = {a:.3f}, b = {b:.4f}")
        if self.mosaicity_deg is not None:
            out.append(f"mosaicity: {self.mosaicity_deg:.4f} deg"
                       + (f"; stills domain width sigma_0 {self.domain_invA:.2e} 1/A"
                          if self.domain_invA is not None else "")
                       + (f"; profile Lorentzian fraction "
                          f"{self.stills_profile['lorentz_fraction']:.2f}; per-still cell "
                          f"change rms {100 * self.stills_profile['cell_change_rms']:.3f}%, "
                          f"width factor rms "
                          f"{100 * self.stills_profile['log_width_rms']:.1f}%"
                          if self.stills_profile else ""))
        ok = self.images["rejected"] == 0
        if np.any(ok):
            g = self.images["scale"][ok]
            out.append(f"per-image scale: median {np.median(g):.3f}, range {g.min():.3f}.."
                       f"{g.max():.3f}" + (f"; B median {np.median(self.images['bfactor'][ok]):.2f}"
                                           f" A^2" if np.any(self.images["bfactor"] != 0)
                                           else ""))
        out.append(f"rejected: {self.n_outliers} outlier observations, "
                   f"{self.n_rejected_images} images; "
                   + (f"{self.n_overloaded} overloaded observations included"
                      if self.overloads_included else
                      f"{self.n_overloaded} overloaded observations left out")
                   + f", {self.n_masked} masked beyond the limit left out")
        if self.ambiguity:
            out.append(self.ambiguity)
        if self.reference_note:
            out.append(self.reference_note)
        return out


def _usable(t: dict[str, np.ndarray], include_overloads: bool = False
            ) -> tuple[np.ndarray, int, int]:
    """Rows to scale, and the integrated rows left out as overloaded / masked beyond the
    limit (``OVERLOADED`` unless ``include_overloads``; ``MASKED_FRACTION``)."""
    from jfx.models.reflections import ReflectionFlag as F

    flags = np.asarray(t["flags"], np.uint32)
    ok = (flags & np.uint32(int(F.INTEGRATED_SUM))) != 0
    ok &= np.isfinite(t["int_sum"]) & np.isfinite(t["int_sum_var"]) & (t["int_sum_var"] > 0)
    ok &= np.isfinite(t["d"]) & (t["d"] > 0) & np.isfinite(t["lp"]) & (t["lp"] > 0)
    over = ok & ((flags & np.uint32(int(F.OVERLOADED))) != 0)
    masked = ok & ((flags & np.uint32(int(F.MASKED_FRACTION))) != 0)
    drop = masked | (np.zeros_like(over) if include_overloads else over)
    return ok & ~drop, int(np.sum(over & ~masked)), int(np.sum(masked))


def _image_lookup(img_key: np.ndarray, run: int) -> Callable[[np.ndarray], np.ndarray]:
    """Image numbers of run ``run`` → compact image indices (−1: no such image among the
    scaled ones); ``img_key`` the sorted keys run·2³² + image number."""
    def lookup(numbers: np.ndarray) -> np.ndarray:
        key = run * (1 << 32) + np.asarray(numbers, np.int64)
        pos = np.clip(np.searchsorted(img_key, key), 0, len(img_key) - 1)
        return np.where(img_key[pos] == key, pos, -1)
    return lookup


def _merging_cell(runs: list[RunData], cell: Any) -> np.ndarray:
    if cell is not None:
        return np.asarray(cell, np.float64).reshape(6)
    cells = [np.asarray(r.cell, np.float64).reshape(6) for r in runs if r.cell is not None]
    if not cells:
        raise ValueError("scaling needs a unit cell (none stored in the input; give -C)")
    return np.median(np.stack(cells), axis=0)


REF_MIN_ROWS = 5
"""Reference reflections an image needs to be scaled against the reference."""


def _stills_profile(pmodel, fit, rejected) -> dict | None:
    """η and the rms per-still cell change of a stills ``rot`` fit (fitted images), or None."""
    if not getattr(pmodel, "refine_domain", False):
        return None
    d = pmodel.describe(fit.params["partiality"])
    use = fit.image_ok & ~rejected
    c = np.asarray(d["cell_change"])[use] if "cell_change" in d else np.zeros(0)
    w = np.log(np.asarray(d["width_factor"]))[use] if "width_factor" in d else np.zeros(0)
    return {"lorentz_fraction": float(d.get("lorentz_fraction", 0.0)),
            "cell_change_rms": float(np.sqrt(np.mean(c * c))) if c.size else 0.0,
            "log_width_rms": float(np.sqrt(np.mean(w * w))) if w.size else 0.0}


def scale_merge(runs: list[RunData], settings: ScaleSettings,
                partiality: PartialityModel | None = None, *,
                scale_model: ScaleModel | None = None,
                likelihood: Likelihood | None = None, space_group: int | None = None,
                cell: Any = None, reference: Reference | None = None,
                seed: int = 0, progress: Callable[[int], None] | None = None
                ) -> ScalingResult:
    """Scale and merge the integrated reflections of ``runs``.

    Args:
        runs: one :class:`RunData` per input (several runs are scaled together; image
            numbers are per run).
        settings: the scaling options (``-A -B -w --min-partiality --reject-* …``).
        partiality: the partiality model (``-P``, config group ``partiality``); default
            :class:`~jfx.scale.partiality.FixedPartiality`. It is specialised to the runs
            with :meth:`~jfx.scale.base.PartialityModel.bind`.
        scale_model: the scale model (config group ``scale_model``); default
            :class:`~jfx.scale.models.AutoScale`. Specialised to the observations with
            :meth:`~jfx.scale.base.ScaleModel.bind`.
        likelihood: the error model of an observation (config group ``likelihood``);
            default :class:`~jfx.scale.likelihood.NormalLikelihood`.
        space_group: merging space group (``-S``); default the runs' own, else P1.
        cell: merging cell (Å, deg); default the median of the runs' cells.
        reference: reference intensities (``-z``) or None.
        seed: seed of the half-set assignment (CC½) and the ambiguity start.
        progress: called with 1 after each of the ``settings.iterations`` scaling cycles
            (the shell's progress lines), or None.
    Returns:
        :class:`ScalingResult`.
    Raises:
        ValueError: nothing to scale, a cell that does not fit the space group, or runs
            that cannot be combined (one-line message).
    """
    from jfx.scale import reject as rj
    from jfx.scale.ambiguity import ambiguity_operators, resolve_ambiguity
    from jfx.scale.fit import fit_scales
    from jfx.scale.likelihood import NormalLikelihood
    from jfx.scale.merge import merge
    from jfx.scale.models import AutoScale
    from jfx.scale.observations import make_observations, observations_from_table
    from jfx.scale.partiality import FixedPartiality
    from jfx.scale.stats import merging_statistics, reference_on_asu
    from jfx.symmetry.asu import asu_map

    if not runs:
        raise ValueError("nothing to scale: no input runs")
    partiality = partiality if partiality is not None else FixedPartiality()
    lik = likelihood if likelihood is not None else NormalLikelihood()
    sg_num = space_group if space_group is not None else next(
        (r.space_group for r in runs if r.space_group is not None), 1)
    sg = groups.space_group(sg_num)
    cell_m = groups.check_cell_fits(_merging_cell(runs, cell), sg.number)

    # ---- usable rows of every run, images numbered 0..n_img-1 over all runs
    tabs, run_of_row, keys = [], [], []
    n_total = n_overloaded = n_masked = 0
    for k, r in enumerate(runs):
        t = r.table
        n_total += len(t["h"])
        ok, n_ov, n_mk = _usable(t, settings.include_overloads)
        n_overloaded += n_ov
        n_masked += n_mk
        tt = {c: np.asarray(v)[ok] for c, v in t.items()}
        if r.is_rotation and "image_first" in tt and "image_last" in tt:
            # a reflection whose centroid lies just outside the processed frames belongs to
            # the (nearest) frame it was recorded on
            tt["image"] = np.clip(tt["image"], tt["image_first"], tt["image_last"])
        tabs.append(tt)
        run_of_row.append(np.full(int(ok.sum()), k, np.int64))
        keys.append(k * (1 << 32) + np.asarray(tt["image"], np.int64))
    run_row = np.concatenate(run_of_row)
    if run_row.size == 0:
        raise ValueError("nothing to scale: no integrated reflections in the input")
    img_key, img_id = np.unique(np.concatenate(keys), return_inverse=True)
    img_id = img_id.reshape(-1)
    n_img = len(img_key)
    img_run = (img_key >> 32).astype(np.int64)
    img_num = (img_key & ((1 << 32) - 1)).astype(np.int64)
    cat = lambda c: np.concatenate([t[c] for t in tabs])
    hkl = np.stack([cat("h"), cat("k"), cat("l")], 1).astype(np.int64)
    lp = cat("lp").astype(np.float64)
    i_raw = cat("int_sum").astype(np.float64)
    v_raw = cat("int_sum_var").astype(np.float64)
    rotation = [r.is_rotation for r in runs]

    # ---- indexing ambiguity (stills: per image; rotation runs: per run)
    ambiguity_note = None
    op_unit = np.zeros(n_img, np.int64)
    if settings.resolve_ambiguity:
        ops = ambiguity_operators(sg.number, cell_m)
        unit = np.where(np.asarray(rotation)[run_row], n_img + run_row, img_id)
        _, unit_id = np.unique(unit, return_inverse=True)
        unit_id = unit_id.reshape(-1)
        n_units = int(unit_id.max()) + 1
        if len(ops) > 1 and (n_units > 1 or reference is not None):
            ref = None if reference is None else (reference.hkl, reference.intensity)
            amb = resolve_ambiguity(hkl, unit_id, i_raw / lp, np.sqrt(v_raw) / lp, sg.number,
                                    cell_m, reference=ref, n_img=n_units, seed=seed,
                                    operators=ops)
            hkl = amb.reindex(hkl, unit_id).astype(np.int64)
            op_unit[img_id] = amb.op_index[unit_id]
            moved = int(np.sum(amb.op_index != 0))
            ambiguity_note = (f"indexing ambiguity ({len(ops)} settings, {amb.method}): "
                              f"{moved} of {n_units} {'images' if n_units == n_img else 'units'} "
                              f"reindexed" + ("" if amb.converged else " (not converged)"))

    # ---- ASU, limits, observations
    # -A: Friedel mates are separate reflections already in the scaling (their intensities
    # differ by the anomalous signal, which would otherwise enter the error model)
    asu = asu_map(hkl, sg.number, anomalous=settings.anomalous)
    n_groups = 2 * asu.n_refl if settings.anomalous else asu.n_refl
    refl_id = np.where(asu.absent, -1,
                       asu.refl_anom if settings.anomalous else asu.refl).astype(np.int64)
    cols: dict[str, list[np.ndarray]] = {}
    start = 0
    for k_run, (r, t) in enumerate(zip(runs, tabs)):
        n = len(t["h"])
        sl = slice(start, start + n)
        start += n
        if n == 0:
            continue
        o = observations_from_table(
            t, refl_id=refl_id[sl], image_ids=img_id[sl], wavelength_A=r.wavelength_A,
            phi_start_deg=float(r.phi_start_deg or 0.0),
            phi_increment_deg=float(r.phi_increment_deg or 0.0),
            intensity=settings.intensity, min_partiality=settings.min_partiality,
            min_recorded_fraction=settings.min_recorded_fraction,
            partiality_uncertainty=settings.partiality_uncertainty,
            d_min_A=settings.high_resolution_A, n_refl=n_groups, n_img=n_img, pad=False,
            beam_center_px=None if r.is_rotation else r.beam_center_px,
            lab_frame=r.lab_frame if r.is_rotation else None, run=k_run,
            image_lookup=_image_lookup(img_key, k_run) if r.is_rotation else None)
        for f in dataclasses.fields(o):
            if f.metadata.get("static"):
                continue
            cols.setdefault(f.name, []).append(np.asarray(getattr(o, f.name)))
    inc = next((r.phi_increment_deg for r in runs if r.is_rotation), 0.0) or 0.0
    obs = make_observations({k: np.concatenate(v) for k, v in cols.items()},
                            n_refl=n_groups, n_img=n_img,
                            wavelength_A=float(runs[0].wavelength_A),
                            phi_increment_rad=float(np.radians(inc)))
    n_rows = len(run_row)
    ref_refl = None
    if reference is not None:
        ref_refl = reference_on_asu(asu.unique_hkl, (reference.hkl, reference.intensity),
                                    sg.number)
        if settings.anomalous:  # both Friedel mates take the reference's mean intensity
            ref_refl = np.repeat(ref_refl, 2)
        if not np.any(np.isfinite(ref_refl)):
            raise ValueError("the reference shares no reflection with the data")
    # a reference that reaches too few images to scale them is used for the overall scale
    # only: the data are scaled without it, then multiplied by one factor (never dropped)
    ref_fit, ref_note = ref_refl, None
    if ref_refl is not None:
        o_ok = np.asarray(obs.valid)
        has_ref = o_ok & np.isfinite(ref_refl[np.asarray(obs.refl)])
        n_cov = int(np.sum(np.bincount(np.asarray(obs.image)[has_ref], minlength=n_img)
                           >= REF_MIN_ROWS))
        n_data = int(np.sum(np.bincount(np.asarray(obs.image)[o_ok], minlength=n_img) > 0))
        if n_cov < 0.5 * n_data:
            ref_fit = None
            ref_note = (f"reference: only {n_cov} of {n_data} images share >= {REF_MIN_ROWS} "
                        "reflections with it; scaled without it, then put on its scale by "
                        "one factor")
        elif all(r.partiality_refined for r in runs):
            # -r pixelrefine: the reference drove the geometry and partiality; per-image
            # scales fitted to it would carry its errors into every intensity
            ref_fit = None
            ref_note = ("reference: drove the pixel refinement; the data are scaled against "
                        "their own merged intensities, then put on its scale by one factor")

    bw = max((r.bandwidth_fwhm for r in runs), default=0.0)
    stills = any(r.post_refinable_stills for r in runs)
    pmodel = partiality.bind(settings, bandwidth_fwhm=bw, stills=stills)
    smodel = (scale_model if scale_model is not None else AutoScale()).bind(settings, obs)
    n_iter = settings.iterations
    halves = rj.image_halves(n_img, seed=seed)
    rejected_img = np.zeros(n_img, bool)
    outlier = np.zeros(obs.size, bool)
    valid0 = np.asarray(obs.valid).copy()
    params = None
    iterations: list[dict[str, np.ndarray]] = []
    fit = None
    dcc = np.full(n_img, np.nan)

    def refit(params):
        v = valid0 & ~outlier & ~rejected_img[np.asarray(obs.image)]
        o = dataclasses.replace(obs, valid=np.asarray(v))
        return fit_scales(o, pmodel, smodel, lik, reference=ref_fit, iterations=1,
                          solver=settings.solver, params0=params,
                          error_model0=None if fit is None else fit.error_model,
                          robust_weights0=None if fit is None else fit.obs_weight)

    # still rows: the recorded fraction is the (post-refined) partiality itself, so the
    # partiality cutoff of rotation rows applies to it (dials.scale's partiality_cutoff)
    p_min = np.where(np.asarray(obs.is_still),
                     max(settings.min_partiality, settings.min_recorded_fraction),
                     settings.min_partiality)

    def corrected(fit, reported=False):
        """I/(gP), σ/|gP| (σ at the model intensity, or with ``reported`` from the
        integrator's own σ: the outlier and image tests), rows with a weight and a
        partiality of at least the cutoff."""
        gp = fit.obs_scale * fit.obs_partiality
        ok = ((fit.obs_weight > 0) & (np.abs(gp) > 1e-9)
              & (fit.obs_partiality >= p_min))
        gp_s = np.where(ok, gp, 1.0)
        sig = fit.obs_sigma_reported if reported else fit.obs_sigma
        return (np.where(ok, np.asarray(obs.intensity) / gp_s, np.nan),
                np.where(ok, sig / np.abs(gp_s), np.nan), ok)

    refl_o = np.asarray(obs.refl)
    image_o = np.asarray(obs.image)
    still_img = np.bincount(image_o[np.asarray(obs.is_still)], minlength=n_img) > 0
    cc = np.full(n_img, np.nan)
    for it in range(n_iter):
        fit = refit(params)
        params = fit.params
        params = {**params, "scale": smodel.update_hyperparameters(params["scale"], fit, obs)}
        # rejection tests on the integrator's σ: at the model intensity a wildly wrong
        # observation (a bad image) would look like a lone outlier and leave ΔCC½ unharmed
        I_c, s_c, ok = corrected(fit, reported=True)
        cc = rj.image_cc(refl_o[ok], image_o[ok], I_c[ok], fit.intensity, n_img)
        changed = False
        if settings.reject_outliers is not None:
            bad = np.zeros(obs.size, bool)
            bad[ok] = rj.outlier_mask(refl_o[ok], I_c[ok], s_c[ok], settings.reject_outliers)
            changed |= bool(np.any(bad & ~outlier))
            outlier |= bad
        if settings.min_image_cc_percent is not None:
            bad_i = rj.reject_images_cc(cc, settings.min_image_cc_percent) & fit.image_ok
            changed |= bool(np.any(bad_i & ~rejected_img))
            rejected_img |= bad_i
        if (settings.reject_stills_images is not None and still_img.any()
                and it >= min(1, n_iter - 1)):  # once the partiality model has settled
            chi2 = rj.image_chi2(refl_o[ok], image_o[ok], I_c[ok], s_c[ok], fit.intensity,
                                 n_img)
            bad_i = (rj.reject_images_chi2(np.where(still_img, chi2, np.nan),
                                           settings.reject_stills_images) & fit.image_ok)
            changed |= bool(np.any(bad_i & ~rejected_img))
            rejected_img |= bad_i
        # ΔCC½ once, on the first scaled set (Jungfraujoch: score every image, then drop):
        # repeated, the mean − N·sd cut keeps eating into the tail of a distribution that
        # tightens every time, and after outlier rejection a bad image has lost exactly the
        # observations that betray it
        if settings.reject_delta_cchalf is not None and it == 0:
            use = ok & ~outlier & ~rejected_img[image_o]
            dcc = rj.delta_cc_half(refl_o[use], image_o[use], I_c[use], s_c[use], halves,
                                   n_groups, n_img)
            bad_i = rj.reject_images_delta_cc(dcc, settings.reject_delta_cchalf)
            changed |= bool(np.any(bad_i & ~rejected_img))
            rejected_img |= bad_i
        if ref_fit is None:
            iterations.append({"image": img_num.copy(), "scale": fit.scale.copy(),
                               "bfactor": fit.bfactor.copy(), "cc": cc.copy(),
                               "rejected": rejected_img.astype(np.uint8)})
        if changed and it == n_iter - 1:
            fit = refit(params)  # the rejections of the last iteration enter the merge
            params = fit.params
        if progress is not None:
            progress(1)
    assert fit is not None
    I_c, s_c, ok = corrected(fit)
    use = ok & ~outlier & ~rejected_img[image_o]
    cc = rj.image_cc(refl_o[use], image_o[use], I_c[use], fit.intensity, n_img)

    # ---- final merge and statistics (original row order → hkl of the used rows)
    rows = np.flatnonzero(use[:n_rows])
    asu_f = asu_map(hkl[rows], sg.number, anomalous=settings.anomalous)
    w_rob = np.clip(fit.obs_weight, 0.0, 1.0)  # IRLS weights of the likelihood (1: normal)
    merged = merge(asu_f, I_c[rows], s_c[rows], cell_m, sg.number,
                   anomalous=settings.anomalous, weights=w_rob[rows] / s_c[rows] ** 2)
    if ref_note is not None:  # onto the reference's scale: least squares over the common
        r = reference_on_asu(merged.hkl, (reference.hkl, reference.intensity), sg.number)
        both = np.isfinite(r) & np.isfinite(merged.I)
        den = float(np.sum(merged.I[both] ** 2))
        k = float(np.sum(merged.I[both] * r[both])) / den if den > 0 else 1.0
        merged = dataclasses.replace(merged, **{
            f: getattr(merged, f) * k for f in ("I", "sigma", "I_plus", "sig_plus", "I_minus",
                                                "sig_minus") if getattr(merged, f) is not None})
    # statistics count the observations of rejected images too (Jungfraujoch); the merge
    # and CC½ exclude them
    rows_s = np.flatnonzero((ok & ~outlier)[:n_rows])
    asu_s = asu_map(hkl[rows_s], sg.number, anomalous=settings.anomalous)
    ref_arg = None if reference is None else (reference.hkl, reference.intensity)
    stats = merging_statistics(asu_s, I_c[rows_s], s_c[rows_s], image_o[rows_s],
                               halves[image_o[rows_s]], cell_m, sg.number,
                               anomalous=settings.anomalous, n_shells=settings.n_shells,
                               reference=ref_arg, rejected_image_mask=rejected_img)
    wedge = (fit.wedge_deg if fit.wedge_deg is not None
             else np.full(n_img, abs(float(inc)) if inc else np.nan))
    mos = fit.mosaicity_deg
    images = {"run": img_run.astype(np.int32), "image": img_num.astype(np.int32),
              "scale": fit.scale, "bfactor": fit.bfactor, "wedge_deg": np.asarray(wedge),
              "mosaicity_deg": np.full(n_img, np.nan if mos is None else float(mos)),
              "cc": cc, "rejected": (rejected_img | ~fit.image_ok).astype(np.uint8),
              "delta_cc_half": dcc, "ambiguity_op": op_unit.astype(np.int32),
              "cell_change": np.asarray(pmodel.describe(fit.params["partiality"]).get(
                  "cell_change", np.full(n_img, np.nan)), np.float64)}
    return ScalingResult(
        merged=merged, statistics=stats, images=images, iterations=iterations,
        error_model=(float(fit.error_model.a), float(fit.error_model.b)),
        mosaicity_deg=None if mos is None else float(mos), cell=cell_m,
        stills_profile=_stills_profile(pmodel, fit, rejected_img),
        domain_invA=(float(np.exp(float(fit.params["partiality"]["global"]["log_domain"])))
                     if getattr(pmodel, "refine_domain", False) else None),
        space_group=int(sg.number), n_obs_total=int(n_total), n_obs_used=int(rows.size),
        n_outliers=int(np.sum(outlier)), n_rejected_images=int(np.sum(rejected_img)),
        ambiguity=ambiguity_note, reference_used=ref_fit is not None,
        reference_note=ref_note,
        partiality_model=pmodel.label, solver=settings.solver,
        scale_model=smodel.label,
        scale_model_note=smodel.summary(fit.params["scale"],
                                        dataclasses.replace(obs, valid=np.asarray(use))),
        n_overloaded=n_overloaded, n_masked=n_masked,
        overloads_included=bool(settings.include_overloads))

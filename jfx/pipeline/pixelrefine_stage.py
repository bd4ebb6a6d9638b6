"""Pixel-refinement stage (``-r pixelrefine``): reference-driven refinement of every indexed
still against the pixels of its predicted reflections, and integration from the refined
model (:mod:`jfx.pixelrefine`). Runs after the spot-based stills refinement, in place of
the integration stage.

Frames are streamed in chunks of ``general.batch_size``; each chunk's stills are prepared
on the host (:func:`jfx.pixelrefine.stills.prepare`: predicted rows in a generous envelope,
boxes, background, reference intensities), fitted together (``vmap``,
:func:`jfx.pixelrefine.fit.fit_batch`) and integrated (:func:`integrate_rows`); with
several devices (``RunContext.mesh``) each batch is split over them
(:func:`jfx.sharding.shard_batch`). A still
whose fit fails or has too few reflections keeps its spot-refined model (status code, not
an exception); its rows are integrated with the starting profile.

Adds to the state: ``reflections`` (with the refined partiality of every row) and
``pixel_refinement`` (:class:`jfx.pipeline.state.PixelRefinementTable`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from jfx.config import ProcessSettings
from jfx.lazy import LazyModule
from jfx.models.reflections import ReflectionFlag as F
from jfx.models.reflections import Reflections
from jfx.pipeline.context import RunContext
from jfx.pipeline.state import PixelRefinementTable, ProcessState

jax = LazyModule("jax")

ENVELOPE_MOSAICITY_DEG = 0.2
"""σ_M of the prediction envelope of the rows (generous: the refined partiality decides)."""


@dataclasses.dataclass(frozen=True)
class PixelRefineSummary:
    """Console summary of pixel refinement."""

    n_stills: int
    status_counts: dict[str, int]
    medians: dict[str, float]
    median_sigmas: dict[str, float]
    n_reflections: int
    mean_i_over_sigma: float
    seconds: float
    population: dict[str, float] = dataclasses.field(default_factory=dict)
    n_pilot: int = 0
    cycle: int = 1
    cycles: int = 1
    seconds_by_part: dict[str, float] = dataclasses.field(default_factory=dict)

    def lines(self) -> list[str]:
        st = ", ".join(f"{n} {k}" for k, n in self.status_counts.items() if n and k != "ok")
        against = "the reference" if self.cycle == 1 else "the data's own merge"
        out = [f"pixel refinement (cycle {self.cycle} of {self.cycles}): "
               f"{self.status_counts.get('ok', 0)} of {self.n_stills} stills refined against "
               f"{against}" + (f" ({st})" if st else "") + f" in {self.seconds:.1f} s"
               + (" (" + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds_by_part.items())
                  + ")" if self.seconds_by_part else "")]
        fmt = {"mosaicity_deg": ("mosaicity sigma_M", "{:.4f} deg"),
               "domain_invA": ("domain term sigma_0", "{:.2e} 1/A"),
               "bandwidth_fwhm": ("bandwidth FWHM", "{:.2e}"),
               "sigma_px": ("spot sigma", "{:.3f} px"),
               "radial_growth_px": ("radial growth", "{:.3f} px"),
               "rotation_deg": ("orientation change", "{:.4f} deg"),
               "b_factor": ("B", "{:.2f} A^2")}
        parts = []
        for k, (label, f) in fmt.items():
            if k in self.medians and np.isfinite(self.medians[k]):
                s = self.median_sigmas.get(k, np.nan)
                parts.append(f"{label} {f.format(self.medians[k])}"
                             + (f" (+/- {f.format(s)})" if np.isfinite(s) and s > 0 else ""))
        if self.population:
            pop = "; ".join(f"{fmt[k][0]} {fmt[k][1].format(v)}"
                            for k, v in self.population.items() if k in fmt)
            src = (f"pilot of {self.n_pilot} stills" if self.cycle == 1
                   else "previous cycle's medians")
            out.append(f"pixel refinement: {src}: population {pop} "
                       "(the centre of every still's partiality prior)")
        if parts:
            out.append("pixel refinement: median per still: " + "; ".join(parts))
        out.append(f"pixel refinement: {self.n_reflections} reflections integrated from the "
                   f"refined model, <I/sigma> {self.mean_i_over_sigma:.2f}")
        return out


def summary(state: ProcessState) -> PixelRefineSummary | None:
    """The pixel-refinement summary (None when it did not run)."""
    from jfx.pixelrefine.fit import STATUS

    t = state.pixel_refinement
    if t is None:
        return None
    ok = t.status == 0
    med = {k: float(np.median(v[ok])) for k, v in t.values.items()
           if np.ndim(v) == 1 and ok.any()}
    msig = {k: float(np.nanmedian(v[ok])) if ok.any() and np.isfinite(v[ok]).any()
            else float("nan") for k, v in t.sigmas.items() if np.ndim(v) == 1}
    r = state.reflections
    n, isig = 0, float("nan")
    if r is not None:
        g = np.isfinite(r.int_prf) & (r.int_prf_var > 0)
        n = int(g.sum())
        if n:
            isig = float(np.mean(r.int_prf[g] / np.sqrt(r.int_prf_var[g])))
    counts = {name: int(np.sum(t.status == code)) for code, name in STATUS.items()}
    return PixelRefineSummary(n_stills=len(t.status), status_counts=counts, medians=med,
                              median_sigmas=msig, n_reflections=n, mean_i_over_sigma=isig,
                              seconds=float(t.seconds),
                              population=dict(t.population), n_pilot=t.n_pilot,
                              cycle=t.cycle, cycles=t.cycles,
                              seconds_by_part=dict(t.seconds_by_part))


def enabled(settings: ProcessSettings) -> bool:
    return bool(settings.refine.reference_driven and settings.integrate.enabled)


def _space_group(state: ProcessState, settings: ProcessSettings, reference: Any) -> int | None:
    sg = settings.crystal.space_group or state.stored_space_group
    if sg is None and reference is not None:
        sg = getattr(reference, "space_group", None)
    return None if sg is None else int(sg)


def _stack(trees: list) -> Any:
    return jax.tree_util.tree_map(lambda *a: np.stack([np.asarray(x) for x in a]), *trees)


def _index(tree: Any, i: int) -> Any:
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[i], tree)


def _describe(params: dict, sig: dict, partiality: Any, profile: Any,
              basis: np.ndarray) -> tuple[dict, dict]:
    """Physical values and uncertainties of a batch's parameters ((n,) each)."""
    from jfx.models.lattice import basis_to_cell

    vals: dict[str, np.ndarray] = {}
    sigs: dict[str, np.ndarray] = {}
    sc, ss = params["scale"], sig["scale"]
    vals["scale"] = np.exp(np.asarray(sc["log_g"]))
    sigs["scale"] = vals["scale"] * np.asarray(ss["log_g"])
    vals["b_factor"] = np.asarray(sc["b_factor"])
    sigs["b_factor"] = np.asarray(ss["b_factor"])
    for part, key in ((partiality, "partiality"), (profile, "profile")):
        # one description per parameter, in order; first-order uncertainties (relative for
        # the log parameters)
        for pname, (name, v) in zip(params[key], part.describe(params[key]).items()):
            vals[name] = np.asarray(v, np.float64)
            s = np.asarray(sig[key][pname], np.float64)
            sigs[name] = np.abs(vals[name]) * s if pname.startswith("log_") else s
    rv = np.asarray(params["crystal"]["rotvec"])
    vals["rotation_deg"] = np.degrees(np.linalg.norm(rv, axis=-1))
    sigs["rotation_deg"] = np.degrees(np.linalg.norm(np.asarray(sig["crystal"]["rotvec"]),
                                                     axis=-1))
    vals["cell"] = np.stack([basis_to_cell(b) for b in basis])
    return vals, sigs


def _rows(prep: Any, out: dict, k: int, n_sigma: float, inner_px: float, max_masked: float,
          detector_efficiency: bool) -> Reflections:
    """The reflection rows of still ``k`` of a batch from :func:`integrate_rows`' output."""
    n = prep.n
    g = {c: np.asarray(v[k][:n]) for c, v in out.items()}
    keep = g["on"] & (np.abs(g["eps"]) <= n_sigma * g["sigma_eps"])
    sat = np.any(prep.saturated & (prep.r_px <= inner_px), axis=(1, 2))
    flags = np.full(n, int(F.PREDICTED), np.uint32)
    has_sum = np.isfinite(g["int_sum"])
    has_prf = np.isfinite(g["int_prf"])
    flags |= np.where(has_sum, np.uint32(int(F.INTEGRATED_SUM)), np.uint32(0))
    flags |= np.where(has_prf, np.uint32(int(F.INTEGRATED_PRF)), np.uint32(0))
    flags |= np.where(sat, np.uint32(int(F.OVERLOADED)), np.uint32(0))
    ap = prep.r_px <= g["aperture_px"][:, None, None]  # at the predicted start position
    n_in = np.maximum(ap.sum(axis=(1, 2)), 1)
    det = (ap & ~prep.usable & ~prep.saturated).sum(axis=(1, 2))
    nb = (ap & prep.neighbour).sum(axis=(1, 2))
    flags |= np.where(det > 0, np.uint32(int(F.MASKED_PIXEL)), np.uint32(0))
    flags |= np.where(det / n_in > max_masked, np.uint32(int(F.MASKED_FRACTION)), np.uint32(0))
    flags |= np.where(nb > 0, np.uint32(int(F.OVERLAP)), np.uint32(0))
    hit = np.isfinite(prep.observed_x)
    flags |= np.where(hit, np.uint32(int(F.OBSERVED | F.INDEXED)), np.uint32(0))
    t = Reflections.empty(n)
    cols = dict(hkl=prep.hkl, image=np.full(n, prep.image), image_first=np.full(n, prep.image),
                image_last=np.full(n, prep.image), ewald_offset_invA=g["eps"],
                predicted_x=g["x"], predicted_y=g["y"], d_A=1.0 / g["q"],
                partiality=g["P"], lp=g["pol"],
                qe=prep.qe if detector_efficiency else np.ones(n),
                int_sum=g["int_sum"], int_sum_var=g["var_sum"], int_prf=g["int_prf"],
                int_prf_var=g["var_prf"], int_prf_var_bg=g["var_prf_bg"],
                background_mean=g["background"], observed_x=prep.observed_x,
                observed_y=prep.observed_y, flags=flags)
    t = dataclasses.replace(t, **{c: np.asarray(v).astype(getattr(t, c).dtype, copy=False)
                                  for c, v in cols.items()})
    return t.take(keep)


def run(state: ProcessState, settings: ProcessSettings, ctx: RunContext) -> ProcessState:
    """Refine and integrate every indexed still against the reference (nothing when
    pixel refinement is off or nothing was indexed)."""
    from jfx.integrate.predict import detector_d_min, observed_centroids, predict_still
    from jfx.pixelrefine import fit as pf
    from jfx.pixelrefine.stills import ReferenceLookup, bucket, pack, prepare
    from jfx.refine.params import from_basis, system_of_space_group
    from jfx.sharding import replicate, shard_batch

    ix = state.indexing
    if not enabled(settings) or ix is None or not ix.n_indexed or ctx.reference is None:
        return state
    t0 = time.perf_counter()
    pr_set, ig = settings.pixelrefine, settings.integrate
    part, prof, bkg = settings.pixel_partiality, settings.pixel_profile, settings.pixel_background
    ref = ctx.reference
    sg = _space_group(state, settings, ref)
    system = system_of_space_group(sg)
    lookup = ReferenceLookup(ref.hkl, ref.intensity,
                             getattr(ref, "space_group", None) or sg or 1,
                             sigma=getattr(ref, "sigma", None))
    sel, basis, geoms = state.still_models()
    prev = state.pixel_refinement  # a later cycle: start from the previous one's models
    if prev is not None:
        done_ok = {int(p): k for k, p in enumerate(prev.images) if prev.status[k] <= 1}
        for k, p in enumerate(sel):
            if int(p) in done_ok:
                basis[k] = prev.basis[done_ok[int(p)]]
    geo = state.final_geometry
    d_min = ig.d_min_A if ig.d_min_A is not None else detector_d_min(geo)
    r1, r2, _ = ig.radii_px
    half = int(np.ceil(r2))
    bw = float(geo.beam.bandwidth_fwhm)
    indices = np.asarray(state.selection.indices)
    xs = np.asarray(state.spots.x_px, np.float64)
    ys = np.asarray(state.spots.y_px, np.float64)
    spot_ok = ix.spots_of_lattice(0) & np.isfinite(xs) & np.isfinite(ys)
    pos_of_image = {int(indices[p]): k for k, p in enumerate(sel)}
    batch = max(1, int(ctx.batch_size))
    mult = np.asarray(pr_set.profile_multiplier, np.float64)
    kw = dict(partiality=part, profile=prof, system=system)

    parts: dict[int, Reflections] = {}
    res: dict[int, dict] = {}

    population: dict[str, float] = {}
    pilot: list[dict] = []

    prev_pos = {} if prev is None else {int(p): k for k, p in enumerate(prev.images)
                                         if prev.status[k] <= 1}
    tm = {"prepare": 0.0, "fit": 0.0, "integrate": 0.0}

    def start(pr):
        p = pf.still_params(pr.cell_u, part, prof, bw)
        p["partiality"].update({k: np.asarray(v) for k, v in population.items()})
        j = prev_pos.get(int(pr.position))
        if j is not None:  # a later cycle: the previous cycle's scale, widths and profile
            for key, v in prev.params.items():
                group, name = key.split(".", 1)
                if group != "partiality" and name in p[group]:
                    p[group][name] = np.asarray(v[j])
        return p

    def fit(preps: list, prior_sigma: float):
        t = time.perf_counter()
        n_fit_cap = bucket(max(len(p.fit_rows) for p in preps), 64)
        dfit = pack(preps, batch, n_fit_cap, "fit")
        p0 = _stack([start(p) for p in preps] + [start(preps[0])] * (batch - len(preps)))
        too_few = np.array([len(p.fit_rows) < pr_set.min_fit_reflections for p in preps]
                           + [True] * (batch - len(preps)))
        out = pf.fit_batch(shard_batch(p0, ctx.mesh), shard_batch(dfit, ctx.mesh),
                           max_iter=pr_set.max_iter, solver=pr_set.solver,
                           partiality_prior_sigma=float(prior_sigma), **kw)
        out = jax.tree_util.tree_map(np.asarray, out)
        tm["fit"] += time.perf_counter() - t
        return (p0, too_few) + tuple(out)

    def pilot_batch(preps: list) -> None:
        p0, too_few, p1, cost, conv, *_ = fit(preps, pf.LOG_PRIOR_SIGMA)
        for k in range(len(preps)):
            if not too_few[k] and bool(conv[k]) and np.isfinite(float(cost[k])):
                pilot.append({n: float(np.asarray(v)[k]) for n, v in p1["partiality"].items()})

    def process_batch(preps: list) -> None:
        n_all_cap = bucket(max(p.n for p in preps), 256)
        dall = pack(preps, batch, n_all_cap, "all")
        p0, too_few, p1, cost, conv, iters, sig, _ = fit(
            preps, pr_set.population_sigma if population else pf.LOG_PRIOR_SIGMA)
        finite = np.isfinite(np.asarray(cost))
        for leaf in jax.tree_util.tree_leaves(p1):
            finite &= np.all(np.isfinite(leaf.reshape(batch, -1)), axis=1)
        turned = np.degrees(np.linalg.norm(p1["crystal"]["rotvec"], axis=-1))
        finite &= turned <= pf.MAX_ROTATION_DEG  # ran off the spot-refined orientation
        status = np.where(too_few, pf.TOO_FEW, np.where(
            ~finite, pf.FAILED, np.where(np.asarray(conv), pf.OK, pf.NOT_CONVERGED)))
        use_fit = (status == pf.OK) | (status == pf.NOT_CONVERGED)
        p_use = jax.tree_util.tree_map(
            lambda a, b: np.where(use_fit.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), p1, p0)
        t = time.perf_counter()
        out = pf.integrate_rows(shard_batch(p_use, ctx.mesh), shard_batch(dall, ctx.mesh),
                                replicate(mult, ctx.mesh), **kw)
        out = {k: np.asarray(v) for k, v in out.items()}
        tm["integrate"] += time.perf_counter() - t
        bases = np.stack([np.asarray(pf.basis_of(_index(p_use, k), p.U0, system))
                          for k, p in enumerate(preps)])
        vals, sigs = _describe(_index_batch(p_use, len(preps)), _index_batch(sig, len(preps)),
                               part, prof, bases)
        for k, p in enumerate(preps):
            parts[p.image] = _rows(p, out, k, ig.n_sigma, r1, ig.max_masked_fraction,
                                   ig.detector_efficiency)
            ok_k = bool(use_fit[k])
            res[p.image] = dict(position=p.position, status=int(status[k]), basis=bases[k],
                                pparams={f"{g}.{n}": float(np.asarray(v)[k])
                                         for g in ("scale", "partiality", "profile")
                                         for n, v in p_use[g].items()},
                                values={n: v[k] for n, v in vals.items()},
                                sigmas={n: (v[k] if ok_k else np.full_like(v[k], np.nan))
                                        for n, v in sigs.items()},
                                cost=float(cost[k]), n_fit=len(p.fit_rows),
                                iterations=int(iters[k]))

    def stream(images: np.ndarray, label: str, work) -> None:
        with ctx.bar(label, len(images)) as bar:
            for idx, frames in ctx.source.iter_chunks(images, chunk_size=batch,
                                                      workers=ctx.workers,
                                                      skip_unreadable=True):
                t = time.perf_counter()
                preps = []
                for j, frame in zip(np.asarray(idx), frames):
                    k = pos_of_image[int(j)]
                    p = int(sel[k])
                    pred = predict_still(geoms[k], basis[k], d_min,
                                         mosaicity_deg=ENVELOPE_MOSAICITY_DEG,
                                         n_sigma=ig.n_sigma,
                                         space_group=settings.crystal.space_group)
                    cp = from_basis(basis[k], system)
                    ox, oy, _ = observed_centroids(pred.hkl, ix.hkl[p], xs[p], ys[p],
                                                   spot_ok[p])
                    preps.append(prepare(
                        frame, int(j), p, geoms[k], pred, U0=cp.U0, cell_u=cp.cell_u,
                        reference=lookup, half=half, inner_px=r1, background=bkg,
                        max_fit=pr_set.max_fit_reflections, pixel_mask=ctx.pixel_mask,
                        error_value=ctx.error_value, saturation_value=ctx.saturation_value,
                        observed=(ox, oy), reference_sigma=pr_set.reference_sigma,
                        sigma_floor=pr_set.merged_sigma_floor))
                tm["prepare"] += time.perf_counter() - t
                if preps:
                    work(preps)
                if hasattr(bar, "update"):
                    bar.update(len(idx))

    images = indices[sel]
    n_pilot = min(int(pr_set.pilot_stills), len(images))
    if prev is not None and prev.params:
        ok = prev.status <= 1
        if ok.sum() >= 3:
            population.update({n.split(".", 1)[1]: float(np.median(np.asarray(v)[ok]))
                               for n, v in prev.params.items()
                               if n.startswith("partiality.")})
    elif n_pilot >= 3:
        stream(images[:n_pilot], "pixel refinement pilot", pilot_batch)
        if len(pilot) >= 3:
            population.update({n: float(np.median([p[n] for p in pilot])) for n in pilot[0]})
    stream(images, "pixel refinement", process_batch)
    if not parts:
        return state
    order = sorted(res)
    table = PixelRefinementTable(
        images=np.array([res[i]["position"] for i in order], np.int64),
        status=np.array([res[i]["status"] for i in order], np.int32),
        basis=np.stack([res[i]["basis"] for i in order]),
        values={n: np.stack([res[i]["values"][n] for i in order])
                for n in res[order[0]]["values"]},
        sigmas={n: np.stack([res[i]["sigmas"][n] for i in order])
                for n in res[order[0]]["sigmas"]},
        cost=np.array([res[i]["cost"] for i in order]),
        n_fit=np.array([res[i]["n_fit"] for i in order], np.int32),
        iterations=np.array([res[i]["iterations"] for i in order], np.int32),
        population={n: float(np.asarray(v)) for n, v in part.describe(
            {k: np.asarray(v) for k, v in population.items()}).items()}
        if population else {}, n_pilot=len(pilot),
        params={n: np.array([res[i]["pparams"][n] for i in order])
                for n in res[order[0]]["pparams"]},
        seconds_by_part=dict(tm),
        cycle=1 if prev is None else prev.cycle + 1, cycles=int(pr_set.cycles),
        seconds=time.perf_counter() - t0)
    refl = Reflections.concatenate([parts[i] for i in sorted(parts)])
    return dataclasses.replace(state, reflections=refl, pixel_refinement=table).with_time(
        "pixelrefine", time.perf_counter() - t0)


def _index_batch(tree: Any, n: int) -> Any:
    return jax.tree_util.tree_map(lambda a: np.asarray(a)[:n], tree)

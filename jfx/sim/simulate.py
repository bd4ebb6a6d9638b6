"""Build and run a simulated experiment (pure core: numpy/JAX/gemmi, no files, no printing).

``build_experiment(preset)`` → :class:`Experiment` (geometry, crystal, intensities,
detector); ``plan_observations(exp)`` → the observation table (one row per reflection on an
image: exactly what is rendered); ``iter_frames(exp, obs)`` streams integer frames one at a
time (memory independent of the number of images); ``truth_tables(exp, obs)`` gives the
ground-truth arrays for :mod:`jfx.io.truth`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import jax.numpy as jnp
import numpy as np
from scipy.spatial.transform import Rotation

from jfx.models.geometry import Beam, Detector, Geometry, Goniometer
from jfx.models.lattice import cell_to_basis
from jfx.sim import forward as fw
from jfx.sim.artefacts import apply_counts, apply_expected, make_artefacts
from jfx.sim.detector import (
    DetectorLayout,
    add_bad_pixels,
    default_saturation,
    error_value,
    jungfrau_layout,
    plain_layout,
)
from jfx.sim.presets import SimPreset, validate
from jfx.sim.structure import (
    HC_KEV_A,
    StructureFactors,
    compute_intensities,
    intensities_from_model,
    random_atoms,
)


@dataclasses.dataclass
class Experiment:
    """A fully specified simulated experiment.

    Attributes:
        preset: the parameters it was built from.
        geometry: beam, detector (+ goniometer for rotation).
        layout: detector pixel layout and mask.
        sf: true intensities of all hkl.
        U: (3, 3) crystal orientation at ω = 0 (rotation) — basis0 = B_std @ Uᵀ.
        basis0: (3, 3) real-space basis (rows a, b, c, Å), lab frame, ω = 0 (rotation).
        U_images / bases: (n, 3, 3) per image (stills; identity/NaN-free for blanks); a
            still's basis carries its crystal's cell (``cell_images``).
        blank: (n,) bool, image without a crystal (stills).
        image_scale / image_bfactor_A2: (n,) per-image scale g_i and extra B_i (Å²): the
            expected photons of every reflection on image i are multiplied by
            g_i·exp(−2 B_i s²) (ones / zeros unless the preset asks for variation).
        cell_images: (n, 6) cell (Å, deg) of each image's crystal: ``cell`` with a, b, c
            × (1 + δ_i), δ_i ~ N(0, cell_spread²) for stills (all equal otherwise).
        params: spot model; bg: background model.
        saturation_value, error_value: integer pixel values.
    """

    preset: SimPreset
    geometry: Geometry
    layout: DetectorLayout
    sf: StructureFactors
    U: np.ndarray
    basis0: np.ndarray
    U_images: np.ndarray
    bases: np.ndarray
    blank: np.ndarray
    params: fw.SpotParams
    bg: fw.BackgroundParams
    saturation_value: int
    error_value: int
    image_scale: np.ndarray | None = None
    image_bfactor_A2: np.ndarray | None = None
    cell_images: np.ndarray | None = None

    @property
    def is_rotation(self) -> bool:
        return self.preset.kind == "rotation"

    @property
    def n_images(self) -> int:
        return int(self.preset.n_images)


def make_layout(p: SimPreset) -> DetectorLayout:
    layout = plain_layout(*p.crop) if p.crop is not None else jungfrau_layout(p.modules)
    if p.n_dead or p.n_hot:
        layout = add_bad_pixels(layout, p.n_dead, p.n_hot, seed=p.seed + 7)
    return layout


def make_geometry(p: SimPreset, layout: DetectorLayout) -> Geometry:
    ny, nx = layout.shape
    bc = p.beam_center_px
    if bc is None:
        bc = (nx / 2 - 0.5 + 12.3, ny / 2 - 0.5 - 7.6)
    beam = Beam.create(
        p.wavelength_A, bandwidth_fwhm=p.bandwidth_fwhm,
        polarization_fraction=p.polarization_fraction,
    )
    det = Detector.create(p.distance_mm, bc, (ny, nx), pixel_size_mm=layout.pixel_size_mm,
                          sensor_thickness_mm=p.sensor_thickness_mm,
                          sensor_material=p.sensor_material, parallax=p.parallax)
    gon = None
    if p.kind == "rotation":
        gon = Goniometer.create(p.axis, p.start_deg, p.osc_deg)
    return Geometry(beam=beam, detector=det, goniometer=gon)


def make_intensities(p: SimPreset) -> StructureFactors:
    if p.model:
        return intensities_from_model(p.model, p.d_min_A)
    atoms = random_atoms(
        p.n_atoms, seed=p.seed, n_heavy=p.n_heavy, heavy_element=p.heavy_element,
        b_range=p.atom_b_range,
    )
    energy = HC_KEV_A / p.wavelength_A if p.anomalous else None
    return compute_intensities(atoms, p.cell, p.space_group, p.d_min_A, energy_keV=energy)


def build_experiment(p: SimPreset, sf: StructureFactors | None = None) -> Experiment:
    """Assemble geometry, detector, crystal orientation(s) and intensities from a preset.

    Args:
        p: parameters (validated here).
        sf: precomputed intensities (skip the structure-factor calculation), optional.
    Raises:
        ValueError: inconsistent parameters (one-line message).
    """
    p = validate(p)
    layout = make_layout(p)
    geometry = make_geometry(p, layout)
    if sf is None:
        sf = make_intensities(p)
    cell = np.asarray(sf.cell, dtype=np.float64)
    B = cell_to_basis(cell)
    rng = np.random.default_rng(p.seed + 11)
    U = Rotation.random(random_state=rng).as_matrix()
    n = p.n_images
    if p.kind == "still":
        U_images = Rotation.random(n, random_state=rng).as_matrix().reshape(n, 3, 3)
        blank = rng.random(n) < p.blank_fraction
    else:
        U_images = np.repeat(U[None], n, axis=0)
        blank = np.zeros(n, dtype=bool)
    # per-crystal isotropic cell change (own stream: other draws unchanged; × 1.0 exactly
    # without spread, so the bases are bit-for-bit those of a single cell)
    f_cell = np.ones(n)
    if p.kind == "still":
        f_cell = 1.0 + p.cell_spread * np.random.default_rng(p.seed + 29).standard_normal(n)
    bases = (B[None] * f_cell[:, None, None]) @ np.transpose(U_images, (0, 2, 1))
    cell_images = np.repeat(cell[None], n, axis=0)
    cell_images[:, :3] *= f_cell[:, None]
    mean_i = float(np.mean(sf.i_true[sf.i_true > 0])) if np.any(sf.i_true > 0) else 1.0
    params = fw.SpotParams.create(
        scale=p.mean_photons / mean_i, mosaicity_deg=p.mosaicity_deg, bfactor_A2=p.bfactor_A2,
        sigma_px=p.spot_sigma_px, sigma_growth=p.spot_sigma_growth,
        sigma0_invA=p.domain_sigma_invA, divergence_deg=p.divergence_deg,
        profile=p.partiality_profile, detection_efficiency=p.detection_efficiency,
    )
    bg = fw.BackgroundParams.create(p.background, p.water_ring, p.water_ring_d_A)
    sat = p.saturation_value if p.saturation_value is not None else default_saturation(p.dtype)
    rng_s = np.random.default_rng(p.seed + 23)  # own stream: other draws unchanged
    g = np.exp(p.image_scale_sigma * rng_s.standard_normal(n))
    b_img = p.image_bfactor_sd_A2 * rng_s.standard_normal(n)
    return Experiment(
        preset=p, geometry=geometry, layout=layout, sf=sf, U=U, basis0=B @ U.T,
        U_images=U_images, bases=bases, blank=blank, params=params, bg=bg,
        saturation_value=int(sat), error_value=error_value(p.dtype),
        image_scale=g, image_bfactor_A2=b_img, cell_images=cell_images,
    )


def _on_detector(x, y, shape, margin):
    ny, nx = shape
    return (
        np.isfinite(x) & np.isfinite(y)
        & (x >= -margin) & (x <= nx - 1 + margin)
        & (y >= -margin) & (y <= ny - 1 + margin)
    )


def _chunks(n: int, size: int):
    for i0 in range(0, n, size):
        yield i0, min(n, i0 + size)


def plan_rotation(exp: Experiment, chunk: int = 65536) -> dict[str, np.ndarray]:
    """Observation table of a rotation sweep (rows sorted by image).

    Each diffraction event of a non-absent reflection whose centroid lands within
    patch/2 px of the detector is spread over the images its rocking curve touches (±6σ);
    rows with fraction ≥ ``min_fraction`` are kept. Columns: see :func:`fw.rotation_observations`
    plus hkl, event, image, i_true.
    """
    p = exp.preset
    geom = exp.geometry
    sf = exp.sf
    keep = sf.i_true > 0
    hkl = sf.hkl[keep]
    it = sf.i_true[keep]
    margin = exp.params.patch // 2
    basis0 = jnp.asarray(exp.basis0)
    ev_idx, ev_k, ev_lo, ev_hi = [], [], [], []
    inc = abs(float(geom.goniometer.increment_rad))
    sig = float(exp.params.mosaicity_rad)
    for i0, i1 in _chunks(len(hkl), chunk):
        h = np.zeros((chunk, 3), dtype=np.int32)
        h[:, 0] = 1
        h[: i1 - i0] = hkl[i0:i1]
        pr = fw.predict_rotation_all(geom, basis0, jnp.asarray(h))
        frame = np.asarray(pr["frame"])[: i1 - i0]
        x = np.asarray(pr["x"])[: i1 - i0]
        y = np.asarray(pr["y"])[: i1 - i0]
        z = np.abs(np.asarray(pr["zeta"])[: i1 - i0])
        for k in (0, 1):
            ok = _on_detector(x[:, k], y[:, k], exp.layout.shape, margin) & np.isfinite(frame[:, k])
            ok &= z[:, k] > 1e-3
            w = np.minimum(6.0 * sig / np.maximum(z[:, k], 1e-3) / inc + 1.0, 200.0)
            lo = np.floor(frame[:, k] - w)
            hi = np.floor(frame[:, k] + w)
            ok &= (hi >= 0) & (lo <= p.n_images - 1)
            sel = np.flatnonzero(ok)
            ev_idx.append(sel + i0)
            ev_k.append(np.full(sel.size, k, dtype=np.int32))
            ev_lo.append(np.clip(lo[sel], 0, p.n_images - 1).astype(np.int64))
            ev_hi.append(np.clip(hi[sel], 0, p.n_images - 1).astype(np.int64))
    ev_idx = np.concatenate(ev_idx)
    ev_k = np.concatenate(ev_k)
    lo = np.concatenate(ev_lo)
    hi = np.concatenate(ev_hi)
    span = hi - lo + 1
    rep = np.repeat(np.arange(ev_idx.size), span)
    img = lo[rep] + (np.arange(rep.size) - np.repeat(np.cumsum(span) - span, span))
    r_hkl = hkl[ev_idx[rep]]
    r_ev = ev_k[rep]
    r_it = it[ev_idx[rep]]
    cols: dict[str, list] = {}
    n = rep.size
    cap = fw.capacity(min(n, chunk))
    for i0, i1 in _chunks(n, cap):
        a = fw.pad_rows(cap, r_hkl[i0:i1], r_ev[i0:i1], img[i0:i1], r_it[i0:i1])
        o = fw.rotation_observations_jit(geom, basis0, exp.params, *map(jnp.asarray, a[:4]))
        for k, v in o.items():
            cols.setdefault(k, []).append(np.asarray(v)[: i1 - i0])
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in cols.items()}
    out.update(hkl=r_hkl.astype(np.int32), event=r_ev, image=img.astype(np.int64), i_true=r_it)
    good = out["fraction"] >= p.min_fraction
    order = np.argsort(out["image"][good], kind="stable")
    return {k: np.asarray(v)[good][order] for k, v in out.items()}


def plan_stills(exp: Experiment) -> dict[str, np.ndarray]:
    """Observation table of a still series: per non-blank image, every non-absent reflection
    with partiality ≥ ``min_fraction`` whose centre lands within patch/2 px of the detector."""
    p = exp.preset
    geom = exp.geometry
    keep = exp.sf.i_true > 0
    hkl = jnp.asarray(exp.sf.hkl[keep])
    it_np = exp.sf.i_true[keep]
    it = jnp.asarray(it_np)
    margin = exp.params.patch // 2
    tables = []
    for i in range(p.n_images):
        if exp.blank[i]:
            continue
        o = fw.predict_still_all(geom, jnp.asarray(exp.bases[i]), exp.params, hkl, it)
        o = {k: np.asarray(v) for k, v in o.items()}
        ok = _on_detector(o["x"], o["y"], exp.layout.shape, margin)
        ok &= o["partiality"] >= p.min_fraction
        sel = np.flatnonzero(ok)
        t = {k: v[sel] for k, v in o.items()}
        t.update(hkl=exp.sf.hkl[keep][sel], image=np.full(sel.size, i, np.int64), i_true=it_np[sel])
        tables.append(t)
    if not tables:
        return dict(
            hkl=np.zeros((0, 3), np.int32), image=np.zeros(0, np.int64), i_true=np.zeros(0),
            x=np.zeros(0), y=np.zeros(0), eps=np.zeros(0), sigma_eps=np.zeros(0),
            partiality=np.zeros(0), polarization=np.zeros(0), qe=np.zeros(0), dw=np.zeros(0),
            d=np.zeros(0),
            sigma_px=np.zeros(0), expected=np.zeros(0),
        )
    return {k: np.concatenate([t[k] for t in tables]) for k in tables[0]}


def plan_observations(exp: Experiment) -> dict[str, np.ndarray]:
    """Observation table (rotation or stills), rows sorted by image; the per-image scale
    and B of ``exp`` are applied to ``expected`` (column ``image_factor`` holds the factor)."""
    obs = plan_rotation(exp) if exp.is_rotation else plan_stills(exp)
    img = obs["image"].astype(np.int64)
    g = np.ones(exp.n_images) if exp.image_scale is None else exp.image_scale
    b = np.zeros(exp.n_images) if exp.image_bfactor_A2 is None else exp.image_bfactor_A2
    d = np.asarray(obs["d"], dtype=np.float64)
    factor = g[img] * np.exp(-2.0 * b[img] / (4.0 * np.maximum(d, 1e-6) ** 2)) if img.size \
        else np.zeros(0)
    obs["expected"] = np.asarray(obs["expected"]) * factor
    obs["image_factor"] = factor
    return obs


def background(exp: Experiment) -> np.ndarray:
    """(ny, nx) float32 expected background photons per pixel."""
    return np.asarray(fw.background_image_jit(exp.geometry, exp.bg))


def expected_frame(
    exp: Experiment, obs: dict[str, np.ndarray], image: int, bg: np.ndarray | None = None
) -> np.ndarray:
    """Noise-free expected photons (float32 (ny, nx)) of ``image`` (background included)."""
    if bg is None:
        bg = background(exp)
    img = obs["image"]
    a, b = np.searchsorted(img, image, "left"), np.searchsorted(img, image, "right")
    cap = fw.capacity(b - a)
    # the renderer recomputes the photons from I_true: the per-image g·exp(−2B s²) enters here
    i_img = np.asarray(obs["i_true"][a:b], np.float64)
    if "image_factor" in obs:
        i_img = i_img * np.asarray(obs["image_factor"][a:b], np.float64)
    if exp.is_rotation:
        h, ev, im, it, valid = fw.pad_rows(
            cap, obs["hkl"][a:b], obs["event"][a:b], obs["image"][a:b], i_img
        )
        out = fw.render_rotation_jit(
            exp.geometry, jnp.asarray(exp.basis0), exp.params, jnp.asarray(h), jnp.asarray(ev),
            jnp.asarray(im), jnp.asarray(it), jnp.asarray(valid), jnp.asarray(bg),
        )
    else:
        h, it, valid = fw.pad_rows(cap, obs["hkl"][a:b], i_img)
        out = fw.render_still_jit(
            exp.geometry, jnp.asarray(exp.bases[image]), exp.params, jnp.asarray(h),
            jnp.asarray(it), jnp.asarray(valid), jnp.asarray(bg),
        )
    return np.asarray(out)


def digitize(
    expected: np.ndarray,
    pixel_mask: np.ndarray,
    dtype: str,
    saturation_value: int,
    error_value: int,
    rng: np.random.Generator | None,
) -> np.ndarray:
    """Photon counting: Poisson(expected) (or rint without ``rng``), clip at saturation,
    masked pixels → ``error_value``, cast to ``dtype``."""
    lam = np.maximum(expected.astype(np.float64), 0.0)
    counts = rng.poisson(lam) if rng is not None else np.rint(lam)
    counts = np.minimum(counts, saturation_value)
    out = counts.astype(np.dtype(dtype))
    out[pixel_mask != 0] = error_value
    return out


def iter_frames(exp: Experiment, obs: dict[str, np.ndarray]) -> Iterator[np.ndarray]:
    """Stream the integer frames image by image (noise seeded per image by (seed, i)); the
    real-frame artefacts of the preset (:mod:`jfx.sim.artefacts`) are applied here."""
    p = exp.preset
    bg = background(exp)
    art = make_artefacts(p, exp.layout.shape, tuple(np.asarray(exp.geometry.detector.beam_center_px,
                                                                 dtype=np.float64)),
                         exp.layout.pixel_mask)
    for i in range(p.n_images):
        e = expected_frame(exp, obs, i, bg)
        # artefacts draw from their own stream: frames without them are unchanged
        rng_a = np.random.default_rng([p.seed, 2000003, i])
        if art.any_expected:
            e = apply_expected(e, art, rng_a)
        rng = np.random.default_rng([p.seed, 1000003, i]) if p.noise else None
        fr = digitize(
            e, exp.layout.pixel_mask, p.dtype, exp.saturation_value, exp.error_value, rng
        )
        if art.hot_idx.size or art.zingers_per_image > 0:
            fr = apply_counts(fr, art, exp.layout.pixel_mask, exp.saturation_value, rng_a)
        yield fr


def truth_content(exp: Experiment, obs: dict[str, np.ndarray]) -> dict:
    """Ground-truth arrays, grouped as in :mod:`jfx.io.truth` (keyword arguments of
    ``jfx.io.truth.Truth``)."""
    from jfx.physics.diffraction import rotation_matrix

    p = exp.preset
    g = exp.geometry
    beam, det, gon = g.beam, g.detector, g.goniometer
    f = lambda v: np.asarray(v, dtype=np.float64)
    geometry = dict(
        wavelength_A=f(beam.wavelength_A), beam_direction=f(beam.direction),
        bandwidth_fwhm=f(beam.bandwidth_fwhm), polarization_fraction=f(beam.polarization_fraction),
        polarization_axis=f(beam.polarization_axis), distance_mm=f(det.distance_mm),
        beam_center_px=f(det.beam_center_px), fast_axis=f(det.fast_axis),
        slow_axis=f(det.slow_axis), pixel_size_mm=f(det.pixel_size_mm),
        image_shape=np.asarray(det.shape, dtype=np.int64),
        pixel_mask=exp.layout.pixel_mask,
        saturation_value=np.int64(exp.saturation_value), error_value=np.int64(exp.error_value),
    )
    n = p.n_images
    if exp.is_rotation:
        geometry.update(
            rotation_axis=f(gon.axis), start_deg=f(np.rad2deg(float(gon.start_rad))),
            increment_deg=f(np.rad2deg(float(gon.increment_rad))),
        )
        R = np.asarray(rotation_matrix(gon.axis, gon.angle_rad(jnp.arange(n))))
        bases = exp.basis0[None] @ np.transpose(R, (0, 2, 1))
    else:
        bases = exp.bases.copy()
        bases[exp.blank] = np.nan
    crystal = dict(
        cell=f(exp.sf.cell), space_group=np.int64(exp.sf.space_group), U=exp.U,
        basis0=exp.basis0 if exp.is_rotation else np.full((3, 3), np.nan), basis=bases,
        U_images=exp.U_images, mosaicity_deg=f(np.rad2deg(float(exp.params.mosaicity_rad))),
        scale=f(exp.params.scale), bfactor_A2=f(exp.params.bfactor_A2),
        spot_sigma_px=f(exp.params.sigma_px), spot_sigma_growth=f(exp.params.sigma_growth),
        partiality_profile=str(exp.params.profile),
        domain_sigma_invA=f(exp.params.sigma0_invA),
        divergence_deg=f(np.rad2deg(float(exp.params.divergence_rad))),
        cell_spread=f(p.cell_spread),
    )
    m = len(obs["image"])
    img = obs["image"].astype(np.int32)
    rot = exp.is_rotation
    nanv = np.full(m, np.nan)
    lorentz = obs["lorentz"] if rot else np.ones(m)
    part = obs["fraction"] if rot else obs["partiality"]
    observations = dict(
        h=obs["hkl"][:, 0].astype(np.int32), k=obs["hkl"][:, 1].astype(np.int32),
        l=obs["hkl"][:, 2].astype(np.int32), image=img, x=obs["x"], y=obs["y"],
        phi=np.rad2deg(obs["phi"]) if rot else nanv,
        frame=obs["frame"] if rot else img + 0.5, d=obs["d"], partiality=part,
        lorentz=lorentz, polarization=obs["polarization"], lp=lorentz * obs["polarization"],
        qe=obs["qe"],
        dw=obs["dw"], expected_photons=obs["expected"], i_true=obs["i_true"],
        sigma_px=obs["sigma_px"],
    )
    if rot:
        observations.update(zeta=obs["zeta"], event=obs["event"].astype(np.int32))
    else:
        observations.update(eps=obs["eps"], sigma_eps=obs["sigma_eps"])
    image_cells = (np.repeat(f(exp.sf.cell)[None], n, axis=0) if exp.cell_images is None
                   else np.array(exp.cell_images, dtype=np.float64))
    if not exp.is_rotation:
        image_cells[exp.blank] = np.nan
    images = dict(
        is_blank=exp.blank.astype(np.uint8),
        n_reflections=np.bincount(img, minlength=n).astype(np.int32),
        expected_photons=np.bincount(img, weights=obs["expected"], minlength=n),
        scale_factor=(np.ones(n) if exp.image_scale is None else exp.image_scale),
        bfactor_A2=(np.zeros(n) if exp.image_bfactor_A2 is None else exp.image_bfactor_A2),
        cell=image_cells,
    )
    mg = exp.sf.merged()
    merged = dict(
        h=mg["hkl"][:, 0], k=mg["hkl"][:, 1], l=mg["hkl"][:, 2], i_true=mg["i_mean"],
        i_plus=mg["i_plus"], i_minus=mg["i_minus"], centric=mg["centric"].astype(np.uint8),
        absent=mg["absent"].astype(np.uint8), anomalous=bool(exp.sf.anomalous),
    )
    preset = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(p).items()}
    return dict(
        kind=p.kind, n_images=n, geometry=geometry, crystal=crystal, images=images,
        observations=observations, merged=merged, preset=preset,
    )

"""Reflection prediction for integration: which reflections are on which image, and where.

Frames and units: lab frame (McStas), a lattice basis has rows a, b, c (Å); pixels with the
first pixel centre at 0; angles in rad inside. The geometry comes from the (refined)
experiment, the crystal model (mosaicity, bandwidth) from the data or refinement — never from
a simulator's truth.

* Stills (:func:`predict_still`): every reflection to ``d_min`` (systematic absences of the
  space group removed, gemmi) whose excitation error ε lies inside ``n_sigma`` σ_ε of the
  Ewald sphere, σ_ε from mosaicity and bandwidth (:func:`jfx.physics.partiality.still_sigma_eps`;
  Kabsch 2014 nXDS, White et al. 2013), landing on the detector. Position: where the ray
  s0 + q meets the detector (:func:`jfx.physics.diffraction.predict_still`); model partiality
  exp(−ε²/2σ_ε²); polarisation factor.
* Rotation (:func:`predict_rotation`): both diffraction events of every reflection
  (:func:`jfx.physics.diffraction.predict_rotation`), the images the rocking curve touches
  within ``n_sigma`` (Gaussian of width σ_M/|ζ| in φ; Kabsch 2010), and on each image the
  recorded fraction (:func:`jfx.physics.partiality.rotation_fraction`); Lorentz factor
  1/|ζ| (XDS) and polarisation.

Host-side numpy around the jitted physics; the reflection lists are ragged, so they are
returned as flat tables (one row per reflection and image).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jfx.models.geometry import Geometry
from jfx.physics import diffraction as dif
from jfx.physics.corrections import lorentz_rotation, polarization_factor
from jfx.physics.detector import detection_efficiency, sensor_material
from jfx.physics.partiality import rotation_fraction, still_partiality, still_sigma_eps


def miller_indices(basis: np.ndarray, d_min_A: float, space_group: int | None = None
                   ) -> np.ndarray:
    """All hkl ≠ 0 with d ≥ ``d_min_A`` for the basis (rows a, b, c, Å), without the
    systematic absences of ``space_group`` (None: keep all). Returns (m, 3) int32.

    The set depends only on the metric (not on the orientation). Stills of one crystal form
    differ only slightly in their refined cells, so a superset is cached per cell rounded to
    2 % / 2° (generated with a 6 % lower limit) and filtered exactly for ``basis``.
    """
    from jfx.models.lattice import basis_to_cell

    basis = np.asarray(basis, dtype=np.float64)
    if not d_min_A > 0:
        raise ValueError(f"d_min must be > 0 A, got {d_min_A!r}")
    cell = basis_to_cell(basis)
    key = (tuple(np.round(np.log(cell[:3]) / 0.02).astype(int)),
           tuple(np.round(cell[3:] / 2.0).astype(int)), round(float(d_min_A), 2), space_group)
    sup = _MILLER_CACHE.get(key)
    if sup is None:
        sup = _miller_indices(basis, 0.94 * d_min_A, space_group)
        if len(_MILLER_CACHE) > 64:
            _MILLER_CACHE.clear()
        _MILLER_CACHE[key] = sup
    q = sup @ np.linalg.inv(basis).T
    return sup[np.einsum("ij,ij->i", q, q) <= 1.0 / d_min_A**2]


_MILLER_CACHE: dict = {}


def _miller_indices(basis: np.ndarray, d_min_A: float, space_group: int | None) -> np.ndarray:
    if not d_min_A > 0:
        raise ValueError(f"d_min must be > 0 A, got {d_min_A!r}")
    hmax = np.floor(np.linalg.norm(basis, axis=1) / d_min_A).astype(int) + 1
    grid = np.stack(np.meshgrid(*[np.arange(-m, m + 1) for m in hmax], indexing="ij"), -1)
    h = grid.reshape(-1, 3)
    h = h[np.any(h != 0, axis=1)]
    q = h @ np.linalg.inv(basis).T
    h = h[np.einsum("ij,ij->i", q, q) <= 1.0 / d_min_A**2].astype(np.int32)
    if space_group is not None:
        from jfx.symmetry.groups import space_group as sg_of

        absent = sg_of(space_group).operations().systematic_absences(h)
        h = h[~np.asarray(absent, dtype=bool)]
    return h


def _on_detector(x: np.ndarray, y: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    ny, nx = shape
    return (np.isfinite(x) & np.isfinite(y) & (x >= -0.5) & (x < nx - 0.5)
            & (y >= -0.5) & (y < ny - 0.5))


def _shell_halfwidth(beam, d_min_A: float, mosaicity_deg: float, bw: float,
                     n_sigma: float) -> float:
    """Upper bound of n_sigma · σ_ε over |q| ≤ 1/d_min (σ_ε grows with |q|)."""
    lam = float(beam.wavelength_A)
    qmax = 1.0 / d_min_A
    tt = 2.0 * np.arcsin(min(1.0, qmax * lam / 2.0))
    return 1.01 * n_sigma * float(still_sigma_eps(qmax, tt, lam, np.radians(mosaicity_deg), bw))


def ewald_shell_indices(basis: np.ndarray, s0: np.ndarray, d_min_A: float, halfwidth: float,
                        space_group: int | None = None) -> np.ndarray:
    """hkl (m, 3) int32 with d ≥ d_min whose q = hkl·A* lies within ``halfwidth`` (Å⁻¹) of
    the Ewald sphere |s0 + q| = |s0| (absences of ``space_group`` removed).

    Enumerates (h, k) over a plane of the reciprocal lattice and solves the quadratic
    |s0 + q_hk + l·c*|² = (|s0| ± halfwidth)² for the l-intervals inside the shell, so the
    cost grows with the number of (h, k) columns, not with all reflections to d_min.
    The axis with the longest reciprocal vector is taken as l (fewest columns).
    """
    basis = np.asarray(basis, dtype=np.float64)
    rec = np.linalg.inv(basis).T  # rows a*, b*, c*
    order = np.argsort(np.linalg.norm(rec, axis=1))  # l along the longest reciprocal axis
    i, j, kk = order[0], order[1], order[2]
    r_i, r_j, r_k = rec[i], rec[j], rec[kk]
    qmax = 1.0 / d_min_A
    # bounds from the reciprocal metric: |h_i| ≤ qmax · |a_i| (real-space length)
    hmax = np.floor(qmax * np.linalg.norm(basis, axis=1)).astype(int) + 1
    hi, hj = np.meshgrid(np.arange(-hmax[i], hmax[i] + 1), np.arange(-hmax[j], hmax[j] + 1),
                         indexing="ij")
    hi, hj = hi.ravel(), hj.ravel()
    v = s0[None, :] + hi[:, None] * r_i + hj[:, None] * r_j  # s0 + q_hk
    a = float(r_k @ r_k)
    b = 2.0 * (v @ r_k)
    c = np.einsum("ij,ij->i", v, v)
    k0 = float(np.linalg.norm(s0))
    out = []
    lmax = int(hmax[kk])
    lo_r, hi_r = max(k0 - halfwidth, 0.0) ** 2, (k0 + halfwidth) ** 2
    # f(l) = a l² + b l + c ∈ [lo_r, hi_r]: inside the outer root pair, outside the inner one
    disc_o = b * b - 4 * a * (c - hi_r)
    disc_i = b * b - 4 * a * (c - lo_r)
    ok = disc_o >= 0
    so = np.sqrt(np.where(ok, disc_o, 0.0))
    si = np.sqrt(np.where(disc_i > 0, disc_i, 0.0))
    o1, o2 = (-b - so) / (2 * a), (-b + so) / (2 * a)
    i1, i2 = (-b - si) / (2 * a), (-b + si) / (2 * a)
    has_inner = disc_i > 0
    # intervals [o1, i1] and [i2, o2]; without an inner root pair just [o1, o2]
    for s_lo, s_hi in ((o1, np.where(has_inner, i1, o2)),
                       (np.where(has_inner, i2, o2 + 1.0), o2)):
        lo = np.maximum(np.ceil(s_lo), -lmax).astype(np.int64)
        hi_ = np.minimum(np.floor(s_hi), lmax).astype(np.int64)
        n = np.where(ok, np.maximum(hi_ - lo + 1, 0), 0)
        if n.sum() == 0:
            continue
        rep = np.repeat(np.arange(len(n)), n)
        ls = lo[rep] + (np.arange(rep.size) - np.repeat(np.cumsum(n) - n, n))
        out.append(np.stack([hi[rep], hj[rep], ls], 1))
    if not out:
        return np.zeros((0, 3), np.int32)
    h3 = np.unique(np.concatenate(out), axis=0)
    hkl = np.zeros_like(h3)
    hkl[:, i], hkl[:, j], hkl[:, kk] = h3[:, 0], h3[:, 1], h3[:, 2]
    hkl = hkl[np.any(hkl != 0, axis=1)]
    q = hkl @ rec
    hkl = hkl[np.einsum("ij,ij->i", q, q) <= qmax * qmax].astype(np.int32)
    if space_group is not None and len(hkl):
        from jfx.symmetry.groups import space_group as sg_of

        absent = sg_of(space_group).operations().systematic_absences(hkl)
        hkl = hkl[~np.asarray(absent, dtype=bool)]
    return hkl


@dataclasses.dataclass(frozen=True)
class StillPrediction:
    """Reflections predicted on one still (all arrays (n,), ``hkl`` (n, 3) int32).

    Attributes:
        hkl, x_px, y_px, d_A: Miller indices, predicted position, resolution.
        eps_invA: excitation error (Å⁻¹, > 0 outside the sphere); sigma_eps_invA: its model
            width; partiality: exp(−ε²/2σ_ε²) (peak 1); polarization: factor P (I_obs ∝ P);
            qe: sensor detection efficiency at the ray's angle of incidence (I_obs ∝ QE;
            :func:`jfx.physics.detector.detection_efficiency`).
    """

    hkl: np.ndarray
    x_px: np.ndarray
    y_px: np.ndarray
    d_A: np.ndarray
    eps_invA: np.ndarray
    sigma_eps_invA: np.ndarray
    partiality: np.ndarray
    polarization: np.ndarray
    qe: np.ndarray

    @property
    def n(self) -> int:
        return int(self.hkl.shape[0])


def predict_still(geometry: Geometry, basis: np.ndarray, d_min_A: float, *,
                  mosaicity_deg: float = 0.1, bandwidth_fwhm: float | None = None,
                  n_sigma: float = 3.0, space_group: int | None = None,
                  hkl: np.ndarray | None = None) -> StillPrediction:
    """Reflections of a still image (see the module docstring).

    Args:
        geometry: beam + detector.
        basis: (3, 3) lattice of this image (rows a, b, c, Å, lab frame).
        d_min_A: resolution limit.
        mosaicity_deg: mosaic spread σ_M (Gaussian σ).
        bandwidth_fwhm: relative bandwidth Δλ/λ FWHM (None: the beam's).
        n_sigma: keep |ε| ≤ n_sigma · σ_ε.
        space_group: remove its systematic absences.
        hkl: (m, 3) candidate Miller indices (default: :func:`miller_indices`).
    """
    beam = geometry.beam
    bw = float(beam.bandwidth_fwhm) if bandwidth_fwhm is None else float(bandwidth_fwhm)
    if hkl is None:
        hkl = ewald_shell_indices(basis, np.asarray(beam.s0, dtype=np.float64), d_min_A,
                                  _shell_halfwidth(beam, d_min_A, mosaicity_deg, bw, n_sigma),
                                  space_group)
    if len(hkl) == 0:
        z = np.zeros(0)
        return StillPrediction(np.zeros((0, 3), np.int32), z, z, z, z, z, z, z, z)
    # cheap numpy pre-selection of the reflections near the Ewald sphere (an upper bound of
    # σ_ε from the largest |q|), so the jitted kernel sees thousands of rows, not 10⁵–10⁶
    hkl = np.asarray(hkl)
    q = hkl @ np.linalg.inv(np.asarray(basis, dtype=np.float64)).T
    s0 = np.asarray(beam.s0, dtype=np.float64)
    k = float(np.linalg.norm(s0))
    eps0 = np.linalg.norm(q + s0, axis=1) - k
    qmax = float(np.sqrt(np.max(np.einsum("ij,ij->i", q, q)))) if len(q) else 0.0
    lam = float(beam.wavelength_A)
    sig_max = float(still_sigma_eps(qmax, 2.0 * np.arcsin(min(1.0, qmax * lam / 2.0)), lam,
                                    np.radians(mosaicity_deg), bw))
    hkl = hkl[np.abs(eps0) <= 1.01 * n_sigma * sig_max + 1e-9]
    if len(hkl) == 0:
        z = np.zeros(0)
        return StillPrediction(np.zeros((0, 3), np.int32), z, z, z, z, z, z, z, z)
    m = len(hkl)
    cap = 1 << max(10, int(np.ceil(np.log2(m))))  # power-of-two buckets: one compile each
    hp = np.zeros((cap, 3), np.int32)
    hp[:, 0] = 1
    hp[:m] = hkl
    out = _still_kernel(geometry, jnp.asarray(basis, dtype=jnp.float64), jnp.asarray(hp),
                        jnp.asarray(np.radians(mosaicity_deg)), jnp.asarray(bw))
    x, y, eps, sig, d, part, pol, qe = (np.asarray(a)[:m] for a in out)
    keep = (np.abs(eps) <= n_sigma * sig) & _on_detector(x, y, geometry.detector.shape)
    return StillPrediction(
        hkl=np.asarray(hkl, dtype=np.int32)[keep], x_px=x[keep], y_px=y[keep], d_A=d[keep],
        eps_invA=eps[keep], sigma_eps_invA=sig[keep], partiality=part[keep],
        polarization=pol[keep], qe=qe[keep])


@jax.jit
def _still_kernel(geometry: Geometry, basis, hkl, mosaicity_rad, bandwidth_fwhm):
    """Positions, ε, σ_ε, d, partiality and polarisation of (m, 3) hkl on a still."""
    pr = dif.predict_still(geometry, basis, hkl)
    qn = jnp.linalg.norm(pr["q"], axis=-1)
    lam = geometry.beam.wavelength_A
    two_theta = 2.0 * jnp.arcsin(jnp.clip(qn * lam / 2.0, 0.0, 1.0))
    sig = still_sigma_eps(qn, two_theta, lam, mosaicity_rad, bandwidth_fwhm)
    return (pr["x"], pr["y"], pr["eps"], sig, pr["d"], still_partiality(pr["eps"], sig),
            polarization_factor(geometry.beam, pr["s1"]), _qe(geometry, pr["s1"]))


def _qe(geometry: Geometry, s1):
    """Detection efficiency of rays ``s1`` (..., 3); 1 for a sensor material without an
    attenuation table (the pipeline refuses those unless the correction is off)."""
    det = geometry.detector
    if sensor_material(det.sensor_material) is None:
        return jnp.ones(s1.shape[:-1], dtype=jnp.float64)
    return detection_efficiency(det, geometry.beam, s1)


@dataclasses.dataclass(frozen=True)
class RotationPrediction:
    """One row per (reflection event, image it is recorded on) (arrays (n,)).

    Attributes:
        hkl: (n, 3) int32; event: 0/1 (which of the two diffraction events).
        image: int64 image number the row is recorded on (image i spans [i, i+1) in frame
            coordinates).
        frame: centroid frame coordinate of the event (fractional image number).
        phi_rad: centroid rotation angle; x_px, y_px: centroid position (at φ).
        fraction: recorded fraction on ``image`` (rocking curve).
        zeta: Kabsch ζ (= cos ρ, the rocking width is σ_M/|ζ|); lorentz: 1/|e·(ŝ1×ŝ0)|
            = 1/(|ζ| sin 2θ) (Kabsch 2010); polarization: P; qe: sensor detection
            efficiency (:func:`jfx.physics.detector.detection_efficiency`); d_A: resolution.
    """

    hkl: np.ndarray
    event: np.ndarray
    image: np.ndarray
    frame: np.ndarray
    phi_rad: np.ndarray
    x_px: np.ndarray
    y_px: np.ndarray
    fraction: np.ndarray
    zeta: np.ndarray
    lorentz: np.ndarray
    polarization: np.ndarray
    qe: np.ndarray
    d_A: np.ndarray

    @property
    def n(self) -> int:
        return int(self.hkl.shape[0])


def predict_rotation(geometry: Geometry, basis0: np.ndarray, d_min_A: float,
                     images: tuple[int, int], *, mosaicity_deg: float = 0.1,
                     n_sigma: float = 3.0, min_fraction: float = 1e-3,
                     space_group: int | None = None, hkl: np.ndarray | None = None,
                     min_zeta: float = 1e-3) -> RotationPrediction:
    """Reflections of a rotation sweep, per image (see the module docstring).

    Args:
        geometry: with a goniometer (image i spans [start + i·inc, start + (i+1)·inc]).
        basis0: (3, 3) lattice at goniometer angle 0.
        d_min_A: resolution limit.
        images: (first, last) image numbers, inclusive.
        mosaicity_deg: σ_M.
        n_sigma: images within ± n_sigma · σ_M/|ζ| of the centroid are considered …
        min_fraction: … and rows recording less than this fraction are dropped.
        space_group: remove its systematic absences.
        hkl: candidate Miller indices (default :func:`miller_indices`).
        min_zeta: events with |ζ| below this (along the axis: blind) are dropped.
    """
    gon = geometry.goniometer
    if gon is None:
        raise ValueError("rotation prediction needs a goniometer scan")
    first, last = int(images[0]), int(images[1])
    if hkl is None:
        hkl = miller_indices(basis0, d_min_A, space_group)
    pr = dif.predict_rotation(geometry, jnp.asarray(basis0, dtype=jnp.float64),
                              jnp.asarray(hkl))
    frame = np.asarray(pr["frame"])  # (m, 2)
    phi = np.asarray(pr["phi"])
    x, y = np.asarray(pr["x"]), np.asarray(pr["y"])
    z = np.asarray(pr["zeta"])
    d = np.asarray(pr["d"])
    s1 = np.asarray(pr["s1"])
    inc = float(gon.increment_rad)
    start = float(gon.start_rad)
    sig_m = np.radians(mosaicity_deg)
    rows = []
    for k in (0, 1):
        az = np.abs(z[:, k])
        ok = np.isfinite(frame[:, k]) & (az > min_zeta)
        ok &= _on_detector(x[:, k], y[:, k], geometry.detector.shape)
        w = n_sigma * sig_m / np.maximum(az, min_zeta) / abs(inc)  # half-width in images
        lo = np.floor(frame[:, k] - w)
        hi = np.floor(frame[:, k] + w)
        ok &= (hi >= first) & (lo <= last)
        sel = np.flatnonzero(ok)
        lo = np.clip(lo[sel], first, last).astype(np.int64)
        hi = np.clip(hi[sel], first, last).astype(np.int64)
        span = hi - lo + 1
        rep = np.repeat(np.arange(sel.size), span)
        img = lo[rep] + (np.arange(rep.size) - np.repeat(np.cumsum(span) - span, span))
        r = sel[rep]
        phi1 = start + img * inc
        frac = np.asarray(rotation_fraction(phi[r, k], z[r, k], sig_m, phi1, phi1 + inc))
        keep = frac >= min_fraction
        r, img, frac = r[keep], img[keep], frac[keep]
        pol = np.asarray(polarization_factor(geometry.beam, jnp.asarray(s1[r, k])))
        lor = np.asarray(lorentz_rotation(gon.axis, geometry.beam.s0, jnp.asarray(s1[r, k])))
        qe = np.asarray(_qe(geometry, jnp.asarray(s1[r, k])))
        rows.append({"hkl": np.asarray(hkl, np.int32)[r], "event": np.full(r.size, k, np.int8),
                         "image": img, "frame": frame[r, k], "phi_rad": phi[r, k], "x_px": x[r, k],
                         "y_px": y[r, k], "fraction": frac, "zeta": z[r, k],
                         "lorentz": lor, "polarization": pol, "qe": qe, "d_A": d[r]})
    cols = {key: np.concatenate([r_[key] for r_ in rows]) for key in rows[0]}
    order = np.lexsort((cols["event"], cols["frame"], cols["image"]))
    return RotationPrediction(**{key: v[order] for key, v in cols.items()})


def detector_d_min(geometry: Geometry) -> float:
    """Resolution (Å) at the detector corner farthest from the beam (the prediction limit)."""
    ny, nx = geometry.detector.shape
    xs = np.array([-0.5, nx - 0.5, -0.5, nx - 0.5])
    ys = np.array([-0.5, -0.5, ny - 0.5, ny - 0.5])
    return float(np.min(np.asarray(dif.pixel_resolution(geometry.detector, geometry.beam, xs, ys))))


def observed_centroids(hkl_pred: np.ndarray, hkl_spots: np.ndarray, xs: np.ndarray,
                       ys: np.ndarray,
              ok: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed centroids of predicted still rows: the indexed spot with the same hkl.

    Args: ``hkl_pred`` (n, 3) predicted rows; ``hkl_spots`` (S, 3), ``xs``, ``ys`` (S,) px and
    ``ok`` (S,) bool the still's indexed spots. Returns (x (n,) float32, y (n,) float32,
    matched (n,) bool); NaN where no spot matched."""
    obs = {tuple(h): (xs[s], ys[s]) for s, h in enumerate(hkl_spots) if ok[s]}
    ox = np.full(len(hkl_pred), np.nan, np.float32)
    oy = np.full(len(hkl_pred), np.nan, np.float32)
    hit = np.zeros(len(hkl_pred), bool)
    for row, h in enumerate(hkl_pred):
        o = obs.get(tuple(h))
        if o is not None:
            ox[row], oy[row] = o
            hit[row] = True
    return ox, oy, hit

"""Benchmark of the whole scaling verb, jfx.scale.scaling.scale_merge (what -M runs after
integration and what jfjoch_scale runs): ASU mapping, observations, 3 iterations of the fit
(+ error model), rejections, final merge and statistics.

Sets (synthetic reflection tables as integration writes them, known truth):
  * stills: N_IMG × PER observations (default 1000 × 1000 = 1 M) of lysozyme (P4₃2₁2,
    d ≥ 1.6 Å), random symmetry-equivalent indices, per-image G (log-normal σ 0.3), stored
    partiality U(0.1, 1), Poisson-like noise; `-P fixed` (default) and `-P fixed -B
    --reject-outliers 5 --reject-delta-cchalf 3`.
  * rotation: a 180 × 0.5° sweep's worth of summed reflections (~60k rows), `-P rot`.
Each configuration runs once (compile, reported) and then best-of-N.

Usage: python experiments/scale_benchmark/scale_merge.py [--n-img 1000] [--per 1000]
       [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import gemmi
import numpy as np

import jfx  # noqa: F401  (x64)
from jfx.models.reflections import ReflectionFlag as F
from jfx.scale.partiality import FixedPartiality, RotationPartiality
from jfx.scale.scaling import RunData, scale_merge
from jfx.scale.settings import ScaleSettings

MODELS = {"fixed": FixedPartiality, "rot": RotationPartiality}

CELL = (79.1, 79.1, 38.0, 90.0, 90.0, 90.0)


def _unique(d_min):
    uc, sg = gemmi.UnitCell(*CELL), gemmi.SpaceGroup(96)
    hkl = np.asarray(gemmi.make_miller_array(uc, sg, d_min, 0, True), np.int64)
    ops = sg.operations()
    hkl = hkl[[not ops.is_systematically_absent(list(map(int, h))) for h in hkl]]
    d = np.asarray(uc.calculate_d_array(hkl.astype(np.int32)))
    rots = np.array([np.asarray(op.rot) // op.DEN for op in ops.sym_ops])  # (n_ops, 3, 3)
    return hkl, d, rots


def _table(hkl, d, i_true, image, rng, rots, p, lp, extra=None):
    n = image.size
    op = rng.integers(len(rots), size=n)
    h = np.einsum("nj,nji->ni", hkl, rots[op])  # h' = h·R
    h = np.where(rng.random(n)[:, None] < 0.5, -h, h)
    t = dict(h=h[:, 0], k=h[:, 1], l=h[:, 2], image=image, d=d, partiality=p, lp=lp,
             int_prf=np.full(n, np.nan), int_prf_var=np.full(n, np.nan),
             flags=np.full(n, int(F.INTEGRATED_SUM | F.PREDICTED), np.uint32),
             ewald_offset=np.zeros(n), zeta=np.full(n, np.nan),
             predicted_phi=np.full(n, np.nan), image_first=image.copy(),
             image_last=image.copy())
    mu = i_true
    var = mu + 20.0
    t["int_sum"] = mu + rng.standard_normal(n) * np.sqrt(var)
    t["int_sum_var"] = var
    if extra:
        t.update(extra)
    return t


def stills(n_img, per, seed=0):
    rng = np.random.default_rng(seed)
    hkl_u, d_u, rots = _unique(1.6)
    i_u = rng.exponential(1.0, len(hkl_u)) * np.exp(-2 * 15.0 / (4 * d_u**2)) * 3e3
    g = np.exp(0.3 * rng.standard_normal(n_img))
    sel = rng.integers(len(hkl_u), size=n_img * per)
    image = np.repeat(np.arange(n_img), per)
    p = rng.uniform(0.1, 1.0, sel.size)
    lp = rng.uniform(0.8, 1.0, sel.size)
    t = _table(hkl_u[sel], d_u[sel], g[image] * p * lp * i_u[sel], image, rng, rots, p, lp)
    return RunData(table=t, wavelength_A=1.0, cell=np.asarray(CELL), space_group=96), \
        hkl_u, i_u, g


def rotation(n_img=180, seed=1):
    """Summed rotation rows: each unique reflection seen about twice over a 90° sweep."""
    rng = np.random.default_rng(seed)
    hkl_u, d_u, rots = _unique(1.6)
    i_u = rng.exponential(1.0, len(hkl_u)) * np.exp(-2 * 15.0 / (4 * d_u**2)) * 3e3
    sel = np.concatenate([np.arange(len(hkl_u)), rng.integers(len(hkl_u), size=len(hkl_u))])
    n = sel.size
    inc = 0.5
    phi_c = rng.uniform(0, n_img * inc, n)
    zeta = rng.uniform(0.2, 1.0, n) * rng.choice([-1, 1], n)
    sig_m = np.radians(0.15)
    first = np.clip(np.floor((phi_c - 3 * np.degrees(sig_m) / np.abs(zeta)) / inc), 0,
                    n_img - 1).astype(np.int64)
    last = np.clip(np.floor((phi_c + 3 * np.degrees(sig_m) / np.abs(zeta)) / inc), 0,
                   n_img - 1).astype(np.int64)
    from scipy.special import erf
    lo, hi = np.radians(first * inc), np.radians((last + 1) * inc)
    pc = np.radians(phi_c)
    frac = 0.5 * (erf(np.abs(zeta) * (hi - pc) / (np.sqrt(2) * sig_m))
                  - erf(np.abs(zeta) * (lo - pc) / (np.sqrt(2) * sig_m)))
    image = np.clip(np.floor(phi_c / inc), 0, n_img - 1).astype(np.int64)
    lp = 1.0 / np.abs(zeta)
    t = _table(hkl_u[sel], d_u[sel], frac * lp * i_u[sel], image, rng, rots, frac, lp,
               extra=dict(zeta=zeta, predicted_phi=phi_c, image_first=first, image_last=last))
    return RunData(table=t, wavelength_A=1.0, phi_start_deg=0.0, phi_increment_deg=inc,
                   cell=np.asarray(CELL), space_group=96), hkl_u, i_u


def _cc(res, hkl_u, i_u):
    from jfx.symmetry.asu import asu_map

    lut = dict(zip(map(tuple, asu_map(hkl_u, 96).asu_hkl), i_u))
    t = np.array([lut.get(tuple(h), np.nan) for h in res.merged.hkl])
    ok = np.isfinite(t)
    return np.corrcoef(res.merged.I[ok], t[ok])[0, 1]


def timed(label, run, settings, partiality, repeat, hkl_u, i_u):
    t0 = time.perf_counter()
    res = scale_merge([run], settings, MODELS[partiality]())
    first = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = scale_merge([run], settings, MODELS[partiality]())
        best = min(best, time.perf_counter() - t0)
    print(f"{label}: {len(run.table['h'])} obs -> {len(res.merged.hkl)} unique; first call "
          f"{first:.2f} s, best of {repeat} {best:.2f} s; CC(merged, truth) "
          f"{_cc(res, hkl_u, i_u):.4f}; CC1/2 {res.statistics.overall('cc_half'):.4f}",
          flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-img", type=int, default=1000)
    ap.add_argument("--per", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    run, hkl_u, i_u, g = stills(a.n_img, a.per)
    res = timed("stills -P fixed", run, ScaleSettings(merge=True), "fixed", a.repeat,
                hkl_u, i_u)
    lg = np.log(res.images["scale"])
    print(f"  corr(ln G, truth) {np.corrcoef(lg, np.log(g))[0, 1]:.5f}")
    timed("stills -P fixed -B --reject-outliers 5 --reject-delta-cchalf 3", run,
          ScaleSettings(merge=True, refine_bfactor=True, reject_outliers=5.0,
                        reject_delta_cchalf=3.0), "fixed", a.repeat, hkl_u, i_u)
    run_r, hkl_r, i_r = rotation()
    timed("rotation -P rot", run_r, ScaleSettings(merge=True), "rot", a.repeat, hkl_r, i_r)


if __name__ == "__main__":
    main()

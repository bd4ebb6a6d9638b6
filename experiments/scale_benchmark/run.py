"""Scaling benchmark: wall time of jfx.scale.fit.fit_scales after compile.

Sets (synthetic, known truth):
  * stills: N_IMG stills × OBS_PER_IMG observations (default 1000 × 1000 = 1 M obs) of
    ~30k unique reflections, per-image G (log-normal σ 0.3) and B (±10 Å²), stored partiality,
    ``-P fixed -B``, 3 iterations, error model on; lm and lbfgs.
  * rotation: ~100k summed rotation rows over 900 images, ``-P rot`` (mosaicity refined),
    3 iterations; lm and lbfgs, and lm with the per-image wedge refined (``-w``).
Each configuration runs once to compile (reported) and then best-of-N timed.

Usage: python experiments/scale_benchmark/run.py [--n-img 1000] [--per 1000] [--repeat 2]
       [--skip-lbfgs]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.special import erf

import jfx  # noqa: F401  (x64)
from jfx.scale.fit import fit_scales
from jfx.scale.models import ImageScale
from jfx.scale.observations import make_observations
from jfx.scale.partiality import FixedPartiality, RotationPartiality


def stills(n_img, per, n_refl, seed=0):
    rng = np.random.default_rng(seed)
    I_true = rng.exponential(1000.0, n_refl)
    d = 1.0 / np.sqrt(rng.uniform(1 / 10.0**2, 1 / 1.5**2, n_refl))
    G = np.exp(rng.normal(0, 0.3, n_img))
    B = rng.uniform(-10, 10, n_img)
    refl = rng.integers(0, n_refl, n_img * per)
    img = np.repeat(np.arange(n_img), per)
    P = rng.uniform(0.1, 1.0, refl.size)
    mu = G[img] * np.exp(-2 * B[img] * 0.25 / d[refl] ** 2) * P * I_true[refl]
    sig = np.sqrt(mu + 20.0)
    obs = make_observations({"refl": refl, "image": img, "intensity": mu + rng.normal(size=mu.size)
                                 * sig, "sigma": sig, "d_A": d[refl], "partiality_stored": P,
                                 "is_still": np.ones(refl.size, bool)}, n_refl=n_refl, n_img=n_img)
    return obs, G, B


def rotation(n_img=900, per=110, n_refl=20000, mos_deg=0.15, inc_deg=0.1, seed=1):
    rng = np.random.default_rng(seed)
    I_true = rng.exponential(1000.0, n_refl)
    d = 1.0 / np.sqrt(rng.uniform(1 / 10.0**2, 1 / 1.5**2, n_refl))
    G = np.exp(rng.normal(0, 0.1, n_img))
    refl = rng.integers(0, n_refl, n_img * per)
    img = np.repeat(np.arange(n_img), per)
    n = refl.size
    inc = np.radians(inc_deg)
    frames = rng.integers(1, 8, n)
    zeta = rng.uniform(0.2, 1.0, n) * rng.choice([-1, 1], n)
    lo = img * inc
    hi = lo + frames * inc
    sm = np.radians(mos_deg) / np.abs(zeta)
    phi_c = rng.uniform(lo - sm, hi + sm)
    P = 0.5 * (erf((hi - phi_c) / (np.sqrt(2) * sm)) - erf((lo - phi_c) / (np.sqrt(2) * sm)))
    mu = G[img] * P * I_true[refl]
    sig = np.sqrt(mu + 10.0)
    obs = make_observations({"refl": refl, "image": img, "intensity": mu + rng.normal(size=n) * sig,
                                 "sigma": sig, "d_A": d[refl], "phi_c_rad": phi_c, "zeta": zeta,
                                 "phi_lo_rad": lo, "phi_hi_rad": hi, "frames": frames,
                                 "partiality_stored": P}, n_refl=n_refl, n_img=n_img,
                            phi_increment_rad=inc)
    return obs, G


def timed(fn, repeat):
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    best = np.inf
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, first, best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-img", type=int, default=1000)
    ap.add_argument("--per", type=int, default=1000)
    ap.add_argument("--n-refl", type=int, default=30000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-lbfgs", action="store_true")
    a = ap.parse_args()

    obs, G, B = stills(a.n_img, a.per, a.n_refl)
    print(f"stills: {a.n_img} images x {a.per} obs = {a.n_img * a.per} obs "
          f"(padded {obs.size}), {a.n_refl} unique")
    for solver in ["lm"] + ([] if a.skip_lbfgs else ["lbfgs"]):
        fit, first, best = timed(lambda solver=solver: fit_scales(
            obs, FixedPartiality(), ImageScale(refine_bfactor=True), iterations=3,
            solver=solver), a.repeat)
        lg = np.log(G) - np.log(G).mean()
        print(f"  {solver:5s}: first call (incl. compile) {first:6.2f} s, best {best:6.2f} s; "
              f"corr(G) {np.corrcoef(fit.scale, G)[0, 1]:.5f}, "
              f"rmse lnG {np.sqrt(np.mean((np.log(fit.scale) - lg) ** 2)):.4f}, "
              f"rmse B {np.sqrt(np.mean((fit.bfactor - (B - B.mean())) ** 2)):.3f} A^2, "
              f"error model a={float(fit.error_model.a):.3f} b={float(fit.error_model.b):.4f}")

    obs, G = rotation()
    print(f"rotation: {int(np.sum(np.asarray(obs.valid)))} obs (padded {obs.size}), "
          f"{obs.n_img} images, -P rot")
    for solver in ["lm"] + ([] if a.skip_lbfgs else ["lbfgs"]):
        fit, first, best = timed(lambda solver=solver: fit_scales(
            obs, RotationPartiality(mosaicity_deg=0.1), ImageScale(), iterations=3,
            solver=solver), a.repeat)
        print(f"  {solver:5s}: first call (incl. compile) {first:6.2f} s, best {best:6.2f} s; "
              f"corr(G) {np.corrcoef(fit.scale, G)[0, 1]:.5f}, "
              f"mosaicity {fit.mosaicity_deg:.4f} deg (true 0.15)")
    fit, first, best = timed(lambda: fit_scales(
        obs, RotationPartiality(mosaicity_deg=0.1, refine_wedge=True), ImageScale(),
        iterations=3), a.repeat)
    print(f"  lm -w: first call (incl. compile) {first:6.2f} s, best {best:6.2f} s; "
          f"corr(G) {np.corrcoef(fit.scale, G)[0, 1]:.5f}, "
          f"mosaicity {fit.mosaicity_deg:.4f} deg, wedge {np.mean(fit.wedge_deg):.4f} "
          f"+- {np.std(fit.wedge_deg):.4f} deg (true 0.1)")


if __name__ == "__main__":
    main()

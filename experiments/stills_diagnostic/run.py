"""Stills merging diagnostic (issue 13, item 1): which ingredient loses the merged accuracy.

Runs ``jfjoch_process MASTER -o OUT/P/out -X ffbidx -C 79.1,79.1,38,90,90,90 -S 96 -M -P P``
for P in fixed, rot, unity on a stills master of the independent simulator
(``experiments/peer_comparison/simulate.py --size stills_small|stills``) and prints the merged
CC to the true |F|² overall and in equal-volume shells (1/d³) for each P. Then, on the
``-P fixed`` run's reflections (``/entry/reflections`` via
:func:`jfx.io.process_h5.read_process_h5`) and its per-image scales (``/entry/scaling``: G, B),
it replaces the ingredients of the corrected intensity

    I_corr = I_obs / (lp · G_i exp(−2 B_i s²) · P)

one at a time with their true values from ``sim_truth.h5`` and merges again with jfx's own
code (:func:`jfx.symmetry.asu.asu_map` + :func:`jfx.scale.merge.merge`, inverse-variance
weights from the integration variance; rows with P < 0.02, jfx's ``scale.min_partiality``
default, left out as jfx does): (a) true partiality, (a1) only the true width σ_ε on jfx's
own Ewald offset (partiality shape), (a2) only the true Ewald offset with jfx's width
(orientation and cell error), (b) true per-image scale g, (c) both (a) and (b), (d) true
photons instead of the integrated intensity (integration error only), (e) reflections restricted to partiality ≥ 0.2 / 0.5 (model and true partiality), and prints
"ingredient replaced → merged CC overall / lowest shell / highest shell".

Matching: jfx's reflection rows are matched to the truth's per-image observations by
image + hkl; jfx may index each still in a point-group-equivalent setting, so for every image
the point-group operation (of P4₃2₁2's Laue group, with Friedel) that matches the most hkl is
applied (:func:`best_ops_per_image`). Only matched rows enter the ingredient table (the same
rows for every line, less those under the partiality cut of that line's P), so the lines
differ by the replaced ingredient only. "merged/true at d > 10 Å" is the least-squares scale
of those reflections over that of the rest (:func:`low_res_ratio`).

Usage (repository root, jfx importable)::

    python experiments/peer_comparison/simulate.py --size stills_small -o /tmp/stillsdiag/sim
    python experiments/stills_diagnostic/run.py --master /tmp/stillsdiag/sim/sim_master.h5 \\
        --truth /tmp/stillsdiag/sim/sim_truth.h5 -o /tmp/stillsdiag/out
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "peer_comparison"))
import simulate as sim

SG = 96
CELL_ARG = "79.1,79.1,38,90,90,90"
MIN_PARTIALITY = 0.02  # jfx's scale.min_partiality default, applied to the P of each line
F_SUM, F_PRF, F_OVERLOAD, F_OUTLIER = 1 << 3, 1 << 4, 1 << 5, 1 << 8


# ----------------------------------------------------------------------------- pure helpers

def point_group_ops(sg: int = SG, friedel: bool = True) -> np.ndarray:
    """(m, 3, 3) integer operations acting on row vectors (h' = h R): the space group's
    rotation parts, and their negatives with ``friedel``."""
    ops = sim.symmetry_ops(sg)
    return np.concatenate([ops, -ops]) if friedel else ops


def _keys(image: np.ndarray, hkl: np.ndarray) -> np.ndarray:
    return np.asarray(image, np.int64) * (1 << 31) + sim.hkl_key(hkl)


def best_ops_per_image(img_a, hkl_a, img_b, hkl_b, ops, n_img: int) -> tuple[np.ndarray, np.ndarray]:
    """For every image, the operation R (index into ``ops``) for which the most rows
    ``hkl_a @ R`` of that image are found among the rows of ``hkl_b`` on the same image.

    Returns ``(op (n_img,) int, n_matched (n_img,) int)``; op = 0 where nothing matches.
    """
    kb = np.unique(_keys(img_b, hkl_b))
    counts = np.zeros((len(ops), n_img), np.int64)
    for j, R in enumerate(ops):
        hit = np.isin(_keys(img_a, np.asarray(hkl_a, np.int64) @ R), kb)
        counts[j] = np.bincount(np.asarray(img_a)[hit], minlength=n_img)[:n_img]
    return np.argmax(counts, axis=0), counts.max(axis=0)


def match_rows(img_a, hkl_a, img_b, hkl_b, ops, n_img: int) -> np.ndarray:
    """Row of b matching each row of a (−1: none) after the per-image best operation."""
    op, _ = best_ops_per_image(img_a, hkl_a, img_b, hkl_b, ops, n_img)
    img_a = np.asarray(img_a, np.int64)
    h = np.einsum("ni,nij->nj", np.asarray(hkl_a, np.int64), ops[op[img_a]])
    ka = _keys(img_a, h)
    kb = _keys(img_b, hkl_b)
    order = np.argsort(kb, kind="stable")
    pos = np.clip(np.searchsorted(kb[order], ka), 0, len(kb) - 1)
    found = kb[order][pos] == ka
    return np.where(found, order[pos], -1)


def shell_edges(d: np.ndarray, n_shells: int) -> np.ndarray:
    """Edges in 1/d³ of ``n_shells`` equal-volume shells spanning ``d`` (Å), low → high res."""
    v = 1.0 / np.asarray(d, float) ** 3
    return np.linspace(v.min(), v.max() * (1 + 1e-9), n_shells + 1)


def cc_by_shell(I, I_true, d, edges) -> tuple[float, np.ndarray]:
    """Pearson CC overall and per shell (NaN for shells with < 3 reflections)."""
    I, I_true = np.asarray(I, float), np.asarray(I_true, float)
    ok = np.isfinite(I) & np.isfinite(I_true)
    shell = np.clip(np.searchsorted(edges, 1.0 / np.asarray(d, float) ** 3, "right") - 1,
                    0, len(edges) - 2)
    out = np.full(len(edges) - 1, np.nan)
    for s in range(len(out)):
        m = ok & (shell == s)
        if m.sum() >= 3:
            out[s] = np.corrcoef(I[m], I_true[m])[0, 1]
    return float(np.corrcoef(I[ok], I_true[ok])[0, 1]), out


def low_res_ratio(I, I_true, d, d_low: float = 10.0) -> float:
    """Least-squares scale k = Σ I·I_true / Σ I_true² of the reflections at d > ``d_low`` Å
    over that of the rest (1: the low-resolution reflections are on the common scale; the
    issue's "merged about 2x too strong" at 20-40 Å reads 2)."""
    I, I_true, d = (np.asarray(x, float) for x in (I, I_true, d))
    ok = np.isfinite(I) & np.isfinite(I_true)
    lo, hi = ok & (d > d_low), ok & (d <= d_low)
    if lo.sum() == 0 or hi.sum() == 0:
        return float("nan")
    k = lambda m: np.sum(I[m] * I_true[m]) / np.sum(I_true[m] ** 2)
    return float(k(lo) / k(hi))


# ----------------------------------------------------------------------------- truth, jfx

def read_truth(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        o = {k: f["observations"][k][()] for k in f["observations"]}
        t = {"obs": o, "scale": f["images/scale"][()], "hit": f["images/hit"][()]}
        m = f["merged"]
        mh = np.stack([m["h"][()], m["k"][()], m["l"][()]], 1).astype(np.int64)
        t["merged_key"] = sim.hkl_key(sim.canonical_hkl(mh, SG))
        t["merged_i"] = m["i_true"][()]
        t["merged_d"] = m["d"][()]
    t["obs_hkl"] = np.stack([o["h"], o["k"], o["l"]], 1).astype(np.int64)
    return t


def truth_of(hkl, truth) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(found, true |F|², d) of merged reflections ``hkl`` (any setting of the Laue group)."""
    key = sim.hkl_key(sim.canonical_hkl(hkl, SG))
    tk = truth["merged_key"]
    order = np.argsort(tk)
    pos = np.clip(np.searchsorted(tk[order], key), 0, len(tk) - 1)
    found = tk[order][pos] == key
    return found, truth["merged_i"][order][pos], truth["merged_d"][order][pos]


def run_jfx(master: Path, out: Path, model: str, extra: list[str]) -> tuple[Path, float]:
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["jfjoch_process", str(master), "-o", str(out / "out"), "-X", "ffbidx", "-C",
           CELL_ARG, "-S", str(SG), "-M", "-P", model, *extra]
    t0 = time.time()
    with open(out / "console.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    return out / "out", time.time() - t0


def read_mtz(path: Path):
    import gemmi
    m = gemmi.read_mtz_file(str(path))
    hkl = np.array(m.make_miller_array(), dtype=np.int64)
    i = np.array(m.column_with_label("IMEAN"), dtype=np.float64)
    ok = np.isfinite(i)
    return hkl[ok], i[ok]


def jfx_merge(hkl, I, sigma, cell):
    from jfx.scale.merge import merge
    from jfx.symmetry.asu import asu_map
    return merge(asu_map(hkl, SG), I, sigma, cell, SG)


# ----------------------------------------------------------------------------- main

def ingredient_table(prefix: Path, truth: dict, edges: np.ndarray, log=print) -> list[dict]:
    from jfx.io.process_h5 import process_h5_path, read_process_h5
    pf = read_process_h5(process_h5_path(prefix))
    r = pf.reflections
    sc = pf.groups.get("scaling", {})
    n_img = int(max(np.max(r.image) + 1, len(truth["scale"])))
    G = np.full(n_img, np.nan)
    Bf = np.zeros(n_img)
    if "image" in sc:
        G[np.asarray(sc["image"], int)] = np.asarray(sc["scale"], float)
        Bf[np.asarray(sc["image"], int)] = np.asarray(sc["bfactor"], float)
    flags = np.asarray(r.flags).astype(np.int64)
    prf = (flags & F_PRF) > 0
    I_obs = np.where(prf, r.int_prf, r.int_sum).astype(float)
    V_obs = np.where(prf, r.int_prf_var, r.int_sum_var).astype(float)
    ok = (((flags & (F_SUM | F_PRF)) > 0) & ((flags & (F_OVERLOAD | F_OUTLIER)) == 0)
          & np.isfinite(I_obs) & (V_obs > 0) & np.isfinite(G[r.image]) & (r.lp > 0))
    hkl = np.asarray(r.hkl, np.int64)
    o = truth["obs"]
    idx = match_rows(r.image[ok], hkl[ok], o["image"], truth["obs_hkl"], point_group_ops(), n_img)
    rows = np.nonzero(ok)[0][idx >= 0]
    t = idx[idx >= 0]
    log(f"ingredients: {ok.sum()} usable jfx rows, {len(rows)} matched to truth "
        f"({len(rows) / max(ok.sum(), 1):.1%}); truth has {len(o['image'])} observations")
    img = r.image[rows]
    s2 = 1.0 / (4.0 * np.asarray(r.d_A[rows], float) ** 2)
    lp = np.asarray(r.lp[rows], float)
    P_m = np.asarray(r.partiality[rows], float)
    P_t = o["partiality"][t]
    G_m = G[img] * np.exp(-2.0 * Bf[img] * s2)
    g_t = truth["scale"][img]
    I, V = I_obs[rows], V_obs[rows]
    ph = o["photons"][t]
    cc_int = float(np.corrcoef(I, ph)[0, 1])
    z = (I - ph) / np.sqrt(V)
    log(f"integrated vs true photons (matched rows): CC {cc_int:.4f}, "
        f"rms (I − photons)/σ {np.sqrt(np.mean(z * z)):.2f}, "
        f"median I/photons (photons ≥ 50) {np.median(I[ph >= 50] / ph[ph >= 50]):.3f}")
    dA = np.asarray(r.d_A[rows], float)
    strong = P_t >= 0.2
    parts = []
    for lo_d, hi_d in ((10.0, np.inf), (4.0, 10.0), (2.5, 4.0), (0.0, 2.5)):
        m = strong & (dA > lo_d) & (dA <= hi_d)
        if m.sum():
            parts.append(f"d {lo_d:g}-{hi_d:g} Å: {np.median(P_m[m] / P_t[m]):.2f} "
                         f"({int(m.sum())})")
    log("median model P / true P (true P >= 0.2), by resolution: " + "; ".join(parts))
    # split the partiality into its width (shape) and the Ewald offset (orientation, cell):
    # jfx's σ_ε from its stored P and ε (P = exp(−ε²/2σ²)), the truth's from the file
    eps_m = np.asarray(r.ewald_offset_invA[rows], float)
    with np.errstate(divide="ignore", invalid="ignore"):
        sig_m = np.abs(eps_m) / np.sqrt(-2.0 * np.log(np.clip(P_m, 1e-300, 1 - 1e-12)))
    sig_m = np.where(np.isfinite(sig_m) & (np.abs(eps_m) > 1e-7), sig_m, np.nanmedian(sig_m))
    P_shape = np.exp(-0.5 * (eps_m / o["sigma_eps"][t]) ** 2)
    P_offset = np.exp(-0.5 * (o["ewald_offset"][t] / sig_m) ** 2)
    log(f"σ_ε median model/true: {np.median(sig_m / o['sigma_eps'][t]):.2f}; "
        f"rms Ewald offset model − true {np.sqrt(np.mean((np.abs(eps_m) - np.abs(o['ewald_offset'][t])) ** 2)):.2e} Å⁻¹, "
        f"true σ_ε median {np.median(o['sigma_eps'][t]):.2e} Å⁻¹")
    cases = [
        ("none (jfx: model P, fitted G·B, integrated I)", I, P_m, G_m, None),
        ("(a) true partiality", I, P_t, G_m, None),
        ("(a1) true σ_ε on jfx's Ewald offset (shape)", I, P_shape, G_m, None),
        ("(a2) true Ewald offset with jfx's σ_ε (orientation/cell)", I, P_offset, G_m, None),
        ("(b) true per-image scale", I, P_m, g_t, None),
        ("(c) true partiality + true scale", I, P_t, g_t, None),
        ("(d) true photons (model P, fitted G·B)", ph, P_m, G_m, None),
        ("(d') true photons + true P + true scale", ph, P_t, g_t, None),
        ("(e) model P >= 0.2", I, P_m, G_m, P_m >= 0.2),
        ("(e) model P >= 0.5", I, P_m, G_m, P_m >= 0.5),
        ("(e) true P >= 0.2 (model P, G·B)", I, P_m, G_m, P_t >= 0.2),
        ("(e) true P >= 0.5 (model P, G·B)", I, P_m, G_m, P_t >= 0.5),
        ("(c)+(e) true P, g; true P >= 0.5", I, P_t, g_t, P_t >= 0.5),
    ]
    out = []
    for name, Ix, P, g, sel in cases:
        m = (P >= MIN_PARTIALITY) & np.isfinite(g) & (g > 0)
        if sel is not None:
            m &= sel
        den = lp[m] * g[m] * P[m]
        sig = np.sqrt(np.maximum(V[m] if Ix is I else np.maximum(Ix[m], 1.0), 1e-6)) / den
        merged = jfx_merge(hkl[rows][m], Ix[m] / den, sig, pf.unit_cell if pf.unit_cell
                           is not None else np.array([79.1, 79.1, 38, 90, 90, 90]))
        found, it, d = truth_of(merged.hkl, truth)
        cc, sh = cc_by_shell(merged.I[found], it[found], d[found], edges)
        out.append({"ingredient": name, "n_obs": int(m.sum()), "n_refl": int(found.sum()),
                    "cc": cc, "shells": sh.tolist(),
                    "low_res_ratio": low_res_ratio(merged.I[found], it[found], d[found])})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--master", type=Path, required=True)
    ap.add_argument("--truth", type=Path, required=True)
    ap.add_argument("-o", "--out", type=Path, default=Path("/tmp/stillsdiag/out"))
    ap.add_argument("--models", default="fixed,rot,unity")
    ap.add_argument("--base", default="fixed", help="-P run whose reflections/scales feed "
                    "the ingredient table")
    ap.add_argument("--shells", type=int, default=10)
    ap.add_argument("--skip-jfx", action="store_true", help="reuse OUT/<P>/out_process.h5")
    ap.add_argument("--jfx-args", default="", help="extra jfjoch_process options")
    a = ap.parse_args(argv)
    if not a.master.exists() or not a.truth.exists():
        print("error: --master / --truth not found", file=sys.stderr)
        return 2
    try:
        truth = read_truth(a.truth)
    except KeyError as e:
        print(f"error: {a.truth} is not a stills truth file (no {e}); make one with "
              "simulate.py --size stills_small|stills", file=sys.stderr)
        return 2
    res: dict = {"models": {}}
    prefixes = {}
    edges = None
    for model in a.models.split(","):
        d = a.out / model
        if not a.skip_jfx:
            try:
                prefixes[model], dt = run_jfx(a.master, d, model, a.jfx_args.split())
            except (subprocess.CalledProcessError, FileNotFoundError) as e:
                print(f"error: jfjoch_process -P {model} failed ({e}); see {d}/console.log",
                      file=sys.stderr)
                return 1
            res["models"][model] = {"wall_s": dt}
        else:
            prefixes[model] = d / "out"
            res["models"][model] = {}
        hkl, I = read_mtz(prefixes[model].with_suffix(".mtz"))
        found, it, dd = truth_of(hkl, truth)
        if edges is None:
            edges = shell_edges(dd[found], a.shells)
        cc, sh = cc_by_shell(I[found], it[found], dd[found], edges)
        res["models"][model].update({"cc": cc, "shells": sh.tolist(), "n_refl": int(found.sum()),
                                     "low_res_ratio": low_res_ratio(I[found], it[found],
                                                                    dd[found])})
    dmax = (1.0 / edges) ** (1 / 3)
    print(f"\nshells (equal volume in 1/d³), d from {dmax[0]:.1f} to {dmax[-1]:.2f} Å: "
          + " ".join(f"{x:.2f}" for x in dmax[1:]))
    print("\n| jfjoch_process -P | merged CC to truth | merged/true at d > 10 Å "
          "| per shell (low → high resolution) |")
    print("|---|---|---|---|")
    for model, r in res["models"].items():
        print(f"| {model} | {r['cc']:.3f} | {r['low_res_ratio']:.2f} | "
              + " ".join(f"{x:.2f}" for x in r["shells"]) + " |")
    if a.base in prefixes:
        tab = ingredient_table(prefixes[a.base], truth, edges)
        res["ingredients"] = tab
        print(f"\nIngredients replaced by truth on the -P {a.base} run (jfx.scale.merge.merge):\n")
        print("| ingredient replaced | obs | merged CC overall | lowest shell | highest shell "
              "| merged/true at d > 10 Å | all shells |")
        print("|---|---|---|---|---|---|---|")
        for r in tab:
            sh = r["shells"]
            print(f"| {r['ingredient']} | {r['n_obs']} | {r['cc']:.3f} | {sh[0]:.3f} | "
                  f"{sh[-1]:.3f} | {r['low_res_ratio']:.2f} | "
                  + " ".join(f"{x:.2f}" for x in sh) + " |")
    (a.out / "results.json").write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

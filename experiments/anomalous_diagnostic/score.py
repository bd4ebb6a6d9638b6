"""Score a merged anomalous MTZ against the independent simulator's truth (issue 17, item 4).

    python experiments/anomalous_diagnostic/score.py MERGED.mtz SIM_TRUTH.h5 [--json OUT.json]

MERGED.mtz: jfx (``jfjoch_process ... -A``: ``IMEAN SIGIMEAN I(+) SIGI(+) I(-) SIGI(-)``) or
DIALS (``dials.merge anomalous=True``: the same labels, plus N(+)/N(−), F/DANO columns);
any MTZ with ``I(+)``/``I(-)`` columns (CCP4 convention: one row per ASU index h, I(+) = I(h),
I(−) = I(−h)). SIM_TRUTH.h5: ``experiments/peer_comparison/simulate.py --size anomalous*``
(``/merged``: Friedel-orbit representatives h_c with ``i_plus`` = |F(h_c)|², ``i_minus`` =
|F(−h_c)|², ``i_true`` their mean, ``centric``).

Matching (no ASU convention is assumed on either side): each MTZ row h is mapped to the
truth row of its Laue-group orbit (``simulate.canonical_hkl`` with Friedel); h is a rotation
of h_c (same canonical index without Friedel, point group 422 for P4₃2₁2) → the row's true
I(h) = i_plus, I(−h) = i_minus; otherwise (h is a rotation of −h_c) the two swap. The
program's I(+)/I(−) may still be swapped as a whole if its geometry were mirrored (a
different hand); this shows as a negative CC, so both signs are printed
(``cc_anom`` = CC(ΔI, ΔI_true), ``cc_anom_swapped`` = CC(ΔI, −ΔI_true) = −cc_anom) and the
convention that fits is reported.

Printed (and in ``--json``):
* CC (Pearson) of the merged ΔI = I(+) − I(−) to the true ΔI over acentric reflections with
  both mates measured: overall, at d ≥ 3 Å (``--d-anom``), and in ``--shells`` (10)
  equal-volume shells in 1/d³; the least-squares slope of ΔI on ΔI_true (≈ the merged scale
  when the differences are right) and the number of acentric pairs; as the Pearson CC of the
  raw ΔI is led by the strongest reflections, also the CC without the 1 % strongest (true
  mean I), the rank (Spearman) CC, and the rms of (ΔI − slope·ΔI_true)/σ(ΔI) (≈ 1 when the
  merged ΔI are limited by their own σ, i.e. by counting noise);
* merged CC of IMEAN (the mean of I(+) and I(−) where IMEAN is missing) to the true mean
  intensity, overall and in the same shells.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import gemmi
import h5py
import numpy as np

PEER = Path(__file__).resolve().parents[1] / "peer_comparison"
sys.path.insert(0, str(PEER))
import simulate as sim


def read_truth(path: Path) -> dict:
    """The anomalous truth table of ``sim_truth.h5`` (``/merged``) plus the space group."""
    with h5py.File(path, "r") as f:
        if "merged" not in f or "i_plus" not in f["merged"]:
            raise ValueError(f"{path}: no anomalous truth (/merged/i_plus); simulate with "
                             "--size anomalous or anomalous_small")
        g = f["merged"]
        hkl = np.stack([g["h"][()], g["k"][()], g["l"][()]], 1).astype(np.int64)
        return {"hkl": hkl, "i_plus": g["i_plus"][()], "i_minus": g["i_minus"][()],
                "i_true": g["i_true"][()], "d": g["d"][()],
                "centric": g["centric"][()].astype(bool),
                "sg": int(f.attrs.get("space_group", sim.SPACE_GROUP))}


def read_mtz(path: Path) -> dict:
    """hkl (n, 3), I(+), SIGI(+), I(−), SIGI(−), IMEAN (n,) of a merged MTZ (NaN = missing)."""
    mtz = gemmi.read_mtz_file(str(path))
    labels = [c.label for c in mtz.columns]
    need = ("I(+)", "SIGI(+)", "I(-)", "SIGI(-)")
    miss = [c for c in need if c not in labels]
    if miss:
        raise ValueError(f"{path}: no anomalous columns {miss} (columns: {' '.join(labels)})")
    data = np.array(mtz, copy=False)
    col = {lab: data[:, labels.index(lab)].astype(np.float64) for lab in labels}
    hkl = np.rint(data[:, :3]).astype(np.int64)
    ip, im = col["I(+)"], col["I(-)"]
    imean = col["IMEAN"] if "IMEAN" in col else np.nanmean(np.stack([ip, im]), 0)
    return {"hkl": hkl, "i_plus": ip, "sig_plus": col["SIGI(+)"], "i_minus": im,
            "sig_minus": col["SIGI(-)"], "imean": imean, "sg": mtz.spacegroup.number}


def match(hkl: np.ndarray, truth: dict) -> tuple[np.ndarray, np.ndarray]:
    """Truth row of each MTZ row (−1 if none) and whether the row's h is a rotation of the
    truth's h_c (True: true I(h) = i_plus) or of −h_c (False: true I(h) = i_minus)."""
    sg = truth["sg"]
    tkey = sim.hkl_key(truth["hkl"])
    order = np.argsort(tkey)
    c = sim.canonical_hkl(hkl, sg)
    pos = np.clip(np.searchsorted(tkey[order], sim.hkl_key(c)), 0, len(tkey) - 1)
    row = np.where(tkey[order][pos] == sim.hkl_key(c), order[pos], -1)
    plus = sim.hkl_key(sim.canonical_hkl(hkl, sg, friedel=False)) == sim.hkl_key(
        sim.canonical_hkl(truth["hkl"][np.maximum(row, 0)], sg, friedel=False))
    return row, plus


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if len(a) < 3 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def shell_edges(d: np.ndarray, n: int) -> np.ndarray:
    """``n`` + 1 edges in 1/d³ (ascending: low → high resolution), equal volume."""
    v = 1.0 / d ** 3
    return np.linspace(v.min(), v.max() * (1 + 1e-9), n + 1)


def score(m: dict, truth: dict, shells: int = 10, d_anom: float = 3.0) -> dict:
    """The figures of the module docstring for MTZ ``m`` against ``truth``."""
    row, plus = match(m["hkl"], truth)
    ok = row >= 0
    r = np.maximum(row, 0)
    t_h = np.where(plus, truth["i_plus"][r], truth["i_minus"][r])  # true I(h)
    t_mh = np.where(plus, truth["i_minus"][r], truth["i_plus"][r])  # true I(−h)
    d = truth["d"][r]
    cen = truth["centric"][r]
    res = {"n_rows": len(row), "n_unmatched": int((~ok).sum())}
    # anomalous differences: acentric, both mates measured
    pair = ok & ~cen & np.isfinite(m["i_plus"]) & np.isfinite(m["i_minus"])
    dI = (m["i_plus"] - m["i_minus"])[pair]
    dT = (t_h - t_mh)[pair]
    dd = d[pair]
    res["n_acentric_pairs"] = int(pair.sum())
    res["cc_anom"] = pearson(dI, dT)
    res["cc_anom_swapped"] = pearson(dI, -dT)
    res["convention"] = ("I(+) = I(h) as the truth" if not res["cc_anom"] < 0
                         else "I(+)/I(-) swapped (other hand)")
    lo = dd >= d_anom
    res["d_anom"] = d_anom
    res["cc_anom_low"] = pearson(dI[lo], dT[lo])
    res["n_pairs_low"] = int(lo.sum())
    res["anom_slope"] = float((dI * dT).sum() / max((dT * dT).sum(), 1e-300))
    # robustness: the Pearson CC of raw ΔI is led by the strongest reflections
    i_pair = truth["i_true"][r][pair]
    strong = np.zeros(len(dI), bool)
    strong[np.argsort(-i_pair)[:len(dI) // 100]] = True
    res["cc_anom_trim"] = pearson(dI[~strong], dT[~strong])
    res["cc_anom_rank"] = pearson(np.argsort(np.argsort(dI)), np.argsort(np.argsort(dT)))
    sd = np.hypot(m["sig_plus"], m["sig_minus"])[pair]
    z = (dI - res["anom_slope"] * dT) / np.where(sd > 0, sd, np.nan)
    res["anom_rms_z"] = float(np.sqrt(np.nanmean(z * z))) if len(z) else float("nan")
    # mean intensities
    mm = ok & np.isfinite(m["imean"])
    i_t = truth["i_true"][r]
    res["n_merged"] = int(mm.sum())
    res["cc_i"] = pearson(m["imean"][mm], i_t[mm])
    edges = shell_edges(d[mm], shells)
    res["shell_d_max"], res["shell_d_min"] = [], []
    res["cc_anom_shells"], res["n_pairs_shells"], res["cc_i_shells"] = [], [], []
    v_all, v_pair = 1.0 / d ** 3, 1.0 / dd ** 3
    for k in range(shells):
        a, b = edges[k], edges[k + 1]
        res["shell_d_max"].append(float(a ** (-1 / 3)))
        res["shell_d_min"].append(float(b ** (-1 / 3)))
        s = (v_pair >= a) & (v_pair < b)
        res["cc_anom_shells"].append(pearson(dI[s], dT[s]))
        res["n_pairs_shells"].append(int(s.sum()))
        s = mm & (v_all >= a) & (v_all < b)
        res["cc_i_shells"].append(pearson(m["imean"][s], i_t[s]))
    return res


def report(res: dict, name: str = "") -> str:
    f = lambda v, fmt="{:.3f}": "nan" if v is None or not np.isfinite(v) else fmt.format(v)
    lines = [
        (f"{name}: {res['n_acentric_pairs']} acentric pairs ({res['n_pairs_low']} at d >= "
         f"{res['d_anom']:g} A), {res['n_merged']} merged, {res['n_unmatched']} rows unmatched"),
        (f"  CC(I(+)-I(-), true) = {f(res['cc_anom'])} (d >= {res['d_anom']:g} A: "
         f"{f(res['cc_anom_low'])}); other hand {f(res['cc_anom_swapped'])} -> "
         f"{res['convention']}; slope {f(res['anom_slope'], '{:.4g}')}"),
        (f"  without the 1 % strongest: {f(res['cc_anom_trim'])}; rank CC "
         f"{f(res['cc_anom_rank'])}; rms (dI - slope dI_true)/sigma(dI) "
         f"{f(res['anom_rms_z'], '{:.2f}')}"),
        f"  merged CC(I, true) = {f(res['cc_i'], '{:.5f}')}",
        "  shell d (A)      " + " ".join(f"{a:5.2f}-{b:4.2f}" for a, b in
                                       zip(res["shell_d_max"], res["shell_d_min"])),
        "  CC anom          " + " ".join(f"{f(v):>10}" for v in res["cc_anom_shells"]),
        "  pairs            " + " ".join(f"{v:>10d}" for v in res["n_pairs_shells"]),
        "  CC I             " + " ".join(f"{f(v, '{:.5f}'):>10}" for v in res["cc_i_shells"]),
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("mtz", type=Path, help="merged MTZ with I(+) SIGI(+) I(-) SIGI(-)")
    ap.add_argument("truth", type=Path, help="sim_truth.h5 of simulate.py --size anomalous*")
    ap.add_argument("--shells", type=int, default=10)
    ap.add_argument("--d-anom", type=float, default=3.0, help="low-resolution subset d >= (A)")
    ap.add_argument("--name", default=None, help="label of the printed block")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    a = ap.parse_args(argv)
    for p in (a.mtz, a.truth):
        if not p.exists():
            print(f"error: {p} does not exist", file=sys.stderr)
            return 2
    try:
        truth = read_truth(a.truth)
        m = read_mtz(a.mtz)
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    res = score(m, truth, a.shells, a.d_anom)
    res["mtz"], res["truth"] = str(a.mtz), str(a.truth)
    print(report(res, a.name or str(a.mtz)))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

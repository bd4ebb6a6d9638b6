"""Peer comparison: jfx (`jfjoch_process`) and DIALS 3.12 side by side on the same data.

    # independent simulation with truth (see simulate.py), both programs, the table:
    python experiments/peer_comparison/run.py --simulate small -o /tmp/peer
    # any rotation data set (truth optional):
    python experiments/peer_comparison/run.py --master M_master.h5 --space-group 96 \
        [--truth T_truth.h5] -o /tmp/peer_real
    # rerun jfx only (after a change), reuse the DIALS results already in -o:
    python experiments/peer_comparison/run.py --simulate small -o /tmp/peer --skip-dials
    # stills (serial) with the truth of simulate.py --size stills (issue 13):
    python experiments/peer_comparison/run.py --master /tmp/st300/sim/sim_master.h5 \
        --truth /tmp/st300/sim/sim_truth.h5 --unit-cell 79.1,79.1,38,90,90,90 -o /tmp/dials_ssx

Output directory: ``sim/`` (simulation), ``jfx/`` (``out_process.h5``, ``out.mtz``,
``console.log``, ``times.json``), ``dials/`` (every DIALS file and log, ``times.json``,
``extract.npz``), ``table.md`` and ``results.json``. ``--skip-jfx`` / ``--skip-dials`` reuse
what an earlier run left there.

jfx: ``jfjoch_process MASTER -o OUT/jfx/out -R -S SG -M -P rot -v`` (+ ``--jfx-args``).
DIALS: dials.import (``fast_slow_beam_centre`` = jfx centre + 0.5 px, parallax correction off,
the file's polarisation fraction), find_spots, index (``space_group``), refine, integrate,
scale, merge; every stage timed (wall clock). DIALS runs in its own Python (``--dials-python``,
default /usr/bin/python3) to read its reflection tables (dials_extract.py). It needs the
images in one file: a master whose ``/entry/data`` spans several files is first copied into a
single-file master (``dials/single_master.h5``).

Stills (a master without an omega scan): jfx ``jfjoch_process MASTER -o OUT/jfx/out -v -M
[-X ffbidx -C CELL] -S SG`` (default ``-P auto``: ``rot`` on stills); DIALS's serial chain (:func:`run_dials_stills`): dials.import (the
same geometry settings), find_spots, ssx_index (``space_group``, ``unit_cell``),
ssx_integrate (default ellipsoid model), scale (all ``integrated_<batch>`` files,
``anomalous=False``), merge (``anomalous=False``), ``nproc`` for find_spots / ssx_index /
ssx_integrate, defaults otherwise, every stage timed. With a stills truth file
(``simulate.py --size stills*``): merged CC to the true |F|² overall and in ``--shells`` (10)
equal-volume shells whose edges come from the truth d of the reflections jfx merged, exactly as
experiments/stills_diagnostic/run.py builds them (its ``shell_edges``, ``cc_by_shell``,
``truth_of``, ``low_res_ratio`` and ``read_truth`` are used here), so the rows compare with its
table; both programs are scored on their reflections inside those shells; the CC on the
reflections both merged; merged/true at d > 10 Å; rms of (I − k·true)/σ of the merged
intensities after a least-squares scale k (and after k·exp(−2Bs²), :func:`merged_z`); images
indexed / integrated / merged; stage wall times (:func:`collect_stills`, :func:`table_stills`).

Metrics of rotation data (truth only from a simulation's ``sim_truth.h5``):
* per-stage wall times; spots per image (jfx: 2D spots per image; DIALS: 3D spots / images);
  indexed fraction of the spots; refined cell; refinement rmsd (px, deg);
* merged CC to the true |F|² in 8 equal-volume shells (1/d³) from the lowest-resolution
  reflection to the common high-resolution limit, and overall (Pearson, reflections matched
  by their symmetry-orbit representative, simulate.canonical_hkl);
* CC1/2 (each program's own overall figure), <I/σ> of the merged reflections (mean of
  IMEAN/SIGIMEAN from each program's MTZ);
* per-reflection summation (and profile) intensity vs the true recorded photons of the same
  diffraction event (hkl + centroid frame within ``--frame-tol`` images; the hkl are tried
  under every rotation of the point group, the one matching most reflections wins): Pearson
  CC, median ratio measured/true, and std of (I − true)/σ (≈ 1 when σ describes the scatter).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import h5py
import hdf5plugin
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import itertools

import simulate as sim

# experiments/stills_diagnostic/run.py under its own name (this file is ``run`` too): its
# stills truth reader, equal-volume shells, CC per shell and low-resolution ratio
_spec = importlib.util.spec_from_file_location(
    "stills_diagnostic_run", HERE.parent / "stills_diagnostic" / "run.py")
diag = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(diag)

DIALS_STAGES = ("import", "find_spots", "index", "refine", "integrate", "scale", "merge")


# ----------------------------------------------------------------------------- helpers

def log(msg: str) -> None:
    print(f"[peer] {msg}", file=sys.stderr, flush=True)


def run_logged(cmd: list[str], cwd: Path, logfile: Path, env: dict | None = None) -> float:
    """Run ``cmd`` in ``cwd``, stdout+stderr to ``logfile``; returns wall seconds."""
    log(f"$ (cd {cwd} && {' '.join(shlex.quote(c) for c in cmd)})")
    t0 = time.perf_counter()
    with open(logfile, "w") as fh:
        rc = subprocess.run(cmd, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                            check=False).returncode
    dt = time.perf_counter() - t0
    if rc != 0:
        tail = Path(logfile).read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"{cmd[0]} failed (exit {rc}); last lines of {logfile}:\n"
                           + "\n".join(tail))
    return dt


def master_info(master: Path) -> dict:
    """Beam centre (px), images, scan, space group, polarisation, data files of a master."""
    info: dict = {}
    with h5py.File(master, "r") as f:
        det = f["/entry/instrument/detector"]
        info["beam_center"] = (float(det["beam_center_x"][()]), float(det["beam_center_y"][()]))
        info["missing_for_dials"] = [k for k in ("sensor_material", "sensor_thickness")
                                     if k not in det]
        om = f.get("/entry/sample/transformations/omega")
        info["rotation"] = om is not None and np.size(om[()]) > 1
        if info["rotation"]:
            w = np.asarray(om[()], float)
            info["scan"] = (float(w[0]), float(w[1] - w[0]))
        sg = f.get("/entry/sample/space_group")
        if sg is None:
            sg = f.get("/entry/sample/unit_cell_space_group")
        info["space_group"] = int(np.asarray(sg[()]).ravel()[0]) if sg is not None else None
        st = f.get("/entry/instrument/beam/incident_polarization_stokes")
        if st is not None:
            s = np.asarray(st[()], float).ravel()
            info["polarization"] = float(0.5 * (1 + math.hypot(s[1], s[2]) / s[0]))
        data = f["/entry/data"]
        files = set()
        n = 0
        for name in data:
            link = data.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                files.add(link.filename)
            ds = data[name]
            if isinstance(ds, h5py.Dataset) and ds.ndim == 3:
                n += ds.shape[0]
                if ds.is_virtual:
                    files.update(v.file_name for v in ds.virtual_sources())
        info["n_images"] = n
        info["data_files"] = sorted(files)
    return info


def single_file_master(master: Path, out: Path) -> Path:
    """Copy of ``master`` with every image in ``/entry/data/data`` of the copy itself."""
    if out.exists():
        return out
    tmp = out.with_suffix(".tmp")
    with h5py.File(master, "r") as src, h5py.File(tmp, "w") as dst:
        for k, v in src.attrs.items():
            dst.attrs[k] = v
        ent = dst.create_group("entry")
        for k, v in src["entry"].attrs.items():
            ent.attrs[k] = v
        for name in src["entry"]:
            if name != "data":
                src.copy(src["entry"][name], ent, name=name)
        g = ent.create_group("data")
        for k, v in src["entry/data"].attrs.items():
            g.attrs[k] = v
        blocks = [src["entry/data"][n] for n in sorted(src["entry/data"])
                  if isinstance(src["entry/data"][n], h5py.Dataset)
                  and src["entry/data"][n].ndim == 3]
        n = sum(b.shape[0] for b in blocks)
        ny, nx = blocks[0].shape[1:]
        ds = g.create_dataset("data", shape=(n, ny, nx), dtype=blocks[0].dtype,
                              chunks=(1, ny, nx), **hdf5plugin.Bitshuffle(cname="lz4"))
        i = 0
        for b in blocks:
            for j in range(b.shape[0]):
                ds[i] = b[j]
                i += 1
        det = ent["instrument/detector"]
        if "data" in det:
            del det["data"]
        det["data"] = h5py.SoftLink("/entry/data/data")
        # fields dxtbx's NXmx reader requires but some Jungfraujoch-layout files lack
        desc = det["description"][()] if "description" in det else b""
        desc = desc.decode() if isinstance(desc, bytes) else str(desc)
        if "sensor_material" not in det:
            det.create_dataset("sensor_material", data="Si", dtype=h5py.string_dtype())
            log("DIALS copy: sensor_material missing, written as Si")
        if "sensor_thickness" not in det:
            t = 0.00045 if "EIGER" in desc.upper() else 0.00032
            ds = det.create_dataset("sensor_thickness", data=t)
            ds.attrs["units"] = "m"
            log(f"DIALS copy: sensor_thickness missing, written as {t * 1e3:.2f} mm")
    os.replace(tmp, out)
    return out


def dials_env() -> dict:
    env = dict(os.environ)
    env["HDF5_PLUGIN_PATH"] = hdf5plugin.PLUGINS_PATH
    stub = Path("/tmp/peer_comparison_stub")
    stub.mkdir(exist_ok=True)
    (stub / "xfel_mono_sim_ext.py").touch()  # missing compiled extension (Debian build)
    env["PYTHONPATH"] = str(stub)  # DIALS's Python must not see jfx's PYTHONPATH
    env.pop("PYTHONHOME", None)
    return env


# ----------------------------------------------------------------------------- runners

def run_jfx(master: Path, out: Path, sg: int | None, extra: list[str], rotation: bool,
            cell: str | None) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    cmd = ["jfjoch_process", str(master), "-o", str(out / "out"), "-v"]
    if rotation:
        cmd += ["-R", "-M", "-P", "rot"]
    else:  # stills: the default partiality (-P auto = rot on stills); ffbidx with a known cell
        cmd += (["-X", "ffbidx"] if cell else []) + ["-M"]
    if cell:
        cmd += ["-C", cell]
    if sg:
        cmd += ["-S", str(sg)]
    cmd += extra
    wall = run_logged(cmd, out, out / "console.log")
    times = {"total (wall)": wall, "command": " ".join(cmd)}
    (out / "times.json").write_text(json.dumps(times, indent=1))
    return times


def run_dials(master: Path, out: Path, info: dict, sg: int | None, nproc: int,
              cell: str | None, anomalous: bool = False) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    env = dials_env()
    m = master
    if info["data_files"] or info["missing_for_dials"]:
        log(f"images in {len(info['data_files'])} other file(s), missing fields "
            f"{info['missing_for_dials']}: writing a single-file copy for DIALS")
        m = single_file_master(master, out / "single_master.h5")
    bx, by = info["beam_center"]
    imp = [f"geometry.detector.fast_slow_beam_centre={bx + 0.5},{by + 0.5}",
           "geometry.detector.panel.parallax_correction=False"]
    if "polarization" in info:
        imp.append(f"geometry.beam.polarization_fraction={info['polarization']:.6f}")
    sgarg = []
    if sg:
        import gemmi
        sgarg = [f"space_group={gemmi.find_spacegroup_by_number(sg).hm.replace(' ', '')}"]
    if cell:
        sgarg.append(f"unit_cell={cell}")
    if not info["rotation"]:
        return run_dials_stills(out, m, imp, sgarg, nproc, env)
    stages = {
        "import": ["dials.import", str(m.resolve()), *imp],
        "find_spots": ["dials.find_spots", "imported.expt", f"nproc={nproc}"],
        "index": ["dials.index", "imported.expt", "strong.refl", *sgarg],
        "refine": ["dials.refine", "indexed.expt", "indexed.refl"],
        "integrate": ["dials.integrate", "refined.expt", "refined.refl", f"nproc={nproc}"],
        "scale": ["dials.scale", "integrated.expt", "integrated.refl",
                  *(["anomalous=True"] if anomalous else [])],
        "merge": ["dials.merge", "scaled.expt", "scaled.refl",
                  *(["anomalous=True"] if anomalous else [])],
    }
    times = {}
    for name in DIALS_STAGES:
        times[name] = run_logged(stages[name], out, out / f"run_{name}.txt", env)
        (out / "times.json").write_text(json.dumps(times, indent=1))
    times["total (wall)"] = sum(v for k, v in times.items())
    times["commands"] = [" ".join(c) for c in stages.values()]
    (out / "times.json").write_text(json.dumps(times, indent=1))
    return times


def run_dials_stills(out: Path, master: Path, imp: list[str], sgarg: list[str], nproc: int,
                     env: dict) -> dict:
    """DIALS serial (ssx) chain on a stills master, every stage timed (wall s) into
    ``times.json`` as it finishes: dials.import, find_spots, ssx_index (known cell and space
    group: fft1d, then real_space_grid_search), ssx_integrate (default: ellipsoid profile
    model; writes ``integrated_<batch>.expt/refl`` per 50 images), scale (all batches; stills
    get DIALS's default stills model) and merge. Default settings otherwise."""
    times: dict = {}
    cmds = []

    def stage(name: str, cmd: list[str]) -> None:
        cmds.append(" ".join(cmd))
        times[name] = run_logged(cmd, out, out / f"run_{name}.txt", env)
        times["commands"] = cmds
        (out / "times.json").write_text(json.dumps(times, indent=1))

    for old in out.glob("integrated_*.*"):  # batches of an earlier run would be scaled too
        old.unlink()
    stage("import", ["dials.import", str(master.resolve()), *imp])
    stage("find_spots", ["dials.find_spots", "imported.expt", f"nproc={nproc}"])
    try:  # a failure from here on (e.g. nothing indexed) keeps the stages before it
        stage("ssx_index", ["dials.ssx_index", "imported.expt", "strong.refl",
                            f"nproc={nproc}", *sgarg])
        stage("ssx_integrate", ["dials.ssx_integrate", "indexed.expt", "indexed.refl",
                                f"nproc={nproc}"])
        batches = sorted(out.glob("integrated_*.expt"), key=lambda q: int(q.stem.split("_")[1]))
        if not batches:
            raise RuntimeError(f"dials.ssx_integrate wrote no integrated_*.expt in {out}")
        stage("scale", ["dials.scale", *[q.name for q in batches],
                        *[q.with_suffix(".refl").name for q in batches], "anomalous=False"])
        stage("merge", ["dials.merge", "scaled.expt", "scaled.refl", "anomalous=False"])
    except RuntimeError as exc:
        log(f"DIALS stills chain stopped: {str(exc).splitlines()[-1]}")
        lines = str(exc).splitlines()
        times["failed"] = lines[0].split(";")[0] + (f": {lines[-1]}" if len(lines) > 1 else "")
    times["total (wall)"] = sum(v for v in times.values() if isinstance(v, float))
    (out / "times.json").write_text(json.dumps(times, indent=1))
    return times


# ----------------------------------------------------------------------------- metrics

def parse_jfx_console(text: str) -> dict:
    r: dict = {}
    m = re.search(r"spot finding: ([\d.]+) spots/image", text)
    if m:
        r["spots_per_image"] = float(m.group(1))
    m = re.search(r"indexing \(([^)]*)\): (\d+) of (\d+) images indexed", text)
    if m:
        r["images_indexed"] = f"{m.group(2)}/{m.group(3)}"
    m = re.search(r"refinement \((\w+)\): .*?rmsd ([\d.]+) px(?:, ([\d.]+) deg)?", text)
    if m:
        r["rmsd_px"] = float(m.group(2))
        if m.group(3):
            r["rmsd_phi_deg"] = float(m.group(3))
    m = re.search(r"cell \(\w+\): a ([\d.]+)\S* b ([\d.]+)\S* c ([\d.]+)\S* A, alpha ([\d.]+)\S* "
                  r"beta ([\d.]+)\S* gamma ([\d.]+)", text)
    if m:
        r["cell"] = [float(v) for v in m.groups()]
    m = re.search(r"time per part: (.*?) \(", text)
    if m:
        for part in m.group(1).split(","):
            k, v = part.strip().rsplit(" ", 2)[0], part.strip().split()[-2]
            r.setdefault("parts", {})[k] = float(v)
    m = re.search(r"^\s*overall\s+(.*)$", text, re.MULTILINE)
    if m:
        cols = m.group(1).split()  # N_obs N_uniq mult compl I/sig Rmeas CC1/2 CC*
        try:
            r["i_over_sigma_own"] = float(cols[4])
            r["cc_half"] = float(cols[6]) / 100.0
        except (IndexError, ValueError):
            pass
    m = re.search(r"integration: (\d+) of (\d+) predicted reflections integrated"
                  r"(?: on (\d+) images)?", text)
    if m:
        r["integrated"] = f"{m.group(1)}/{m.group(2)}"
        if m.group(3):
            r["images_integrated"] = m.group(3)
    m = re.search(r"error model: .*?a = ([\d.]+), b = ([\d.]+)", text)
    if m:
        r["error_model"] = f"a {float(m.group(1)):.3f}, b {float(m.group(2)):.4f}"
    m = re.search(r"rejected: .*?, (\d+) images", text)
    if m:
        r["images_rejected"] = int(m.group(1))
    for key, pat in (("spotfind", r"spot finding[^:\n]*: \d+ frames in ([\d.]+) s"),
                     ("index", r"^indexing: \d+ images in ([\d.]+) s"),
                     ("integrate", r"^integration: \d+ frames in ([\d.]+) s")):
        m = re.search(pat, text, re.MULTILINE)
        if m and key not in r.get("parts", {}):
            r.setdefault("stage_s", {})[key] = float(m.group(1))
    return r


def parse_dials_scale_log(text: str) -> dict:
    """CC1/2 and I/σ of the "Overall" column of dials.scale's summary table (its columns:
    ``Overall Low High``, with ``Suggested`` in front when it suggests a cut), and the final
    error model (``a, b``; "not refined" when dials.scale had too few reflections for it)."""
    r: dict = {}
    m = re.search(r"^\s+((?:Suggested\s+)?Overall\s+Low\s+High(?:\s+\w+)*)\s*$", text,
                  re.MULTILINE)
    col = m.group(1).split().index("Overall") if m else 3
    for key, label in (("cc_half", "CC half"), ("i_over_sigma_own", "I/sigma")):
        m = re.search(rf"^{re.escape(label)}\s+([-\d.\s]+)$", text, re.MULTILINE)
        vals = m.group(1).split() if m else []
        if len(vals) > col:
            r[key] = float(vals[col])
    em = re.findall(r"Parameters: a = ([\d.]+), b = ([\d.]+)", text)
    if em:
        r["error_model"] = f"a {float(em[-1][0]):.3f}, b {float(em[-1][1]):.4f}"
        if "Insufficient reflections" in text and "to perform error modelling" in text:
            r["error_model"] += " (not refined: too few reflections)"
    return r


def cell_from_basis(basis9) -> list[float]:
    A = np.asarray(basis9, float).reshape(3, 3)
    a, b, c = (np.linalg.norm(v) for v in A)
    ang = lambda u, v: math.degrees(math.acos(np.dot(u, v) / np.linalg.norm(u) / np.linalg.norm(v)))
    return [a, b, c, ang(A[1], A[2]), ang(A[0], A[2]), ang(A[0], A[1])]


def read_mtz(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    import gemmi
    m = gemmi.read_mtz_file(str(path))
    hkl = np.array(m.make_miller_array(), dtype=np.int64)
    i = np.array(m.column_with_label("IMEAN"), dtype=np.float64)
    s = np.array(m.column_with_label("SIGIMEAN"), dtype=np.float64)
    d = np.array(m.make_d_array(), dtype=np.float64)
    ok = np.isfinite(i) & np.isfinite(s) & (s > 0)
    return hkl[ok], i[ok], s[ok], d[ok]


def pearson(a, b) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def merged_cc(hkl, i, truth_key, truth_i, sg) -> tuple[np.ndarray, np.ndarray]:
    """(measured, true) pairs for the merged reflections found in the truth."""
    key = sim.hkl_key(sim.canonical_hkl(hkl, sg))
    order = np.argsort(truth_key)
    pos = np.searchsorted(truth_key[order], key)
    pos = np.clip(pos, 0, len(order) - 1)
    found = truth_key[order][pos] == key
    return found, truth_i[order][pos]


def match_events(hkl, frame, t_hkl, t_frame, sg, tol) -> tuple[np.ndarray, np.ndarray, int]:
    """Index of the truth event of each reflection (−1: none) under the best point-group op."""
    t_key = sim.hkl_key(t_hkl)
    order = np.argsort(t_key, kind="stable")
    tk = t_key[order]
    best = (None, -1, -1)
    for op_i, R in enumerate(sim.symmetry_ops(sg)):
        key = sim.hkl_key(np.asarray(hkl, np.int64) @ R)
        lo = np.searchsorted(tk, key, "left")
        hi = np.searchsorted(tk, key, "right")
        idx = np.full(len(key), -1)
        dbest = np.full(len(key), np.inf)
        for off in range(3):  # at most a few crossings per hkl
            j = lo + off
            ok = j < hi
            jj = order[np.minimum(j, len(order) - 1)]
            dist = np.where(ok, np.abs(t_frame[jj] - frame), np.inf)
            better = dist < dbest
            idx = np.where(better, jj, idx)
            dbest = np.where(better, dist, dbest)
        idx = np.where(dbest <= tol, idx, -1)
        n = int(np.sum(idx >= 0))
        if n > best[1]:
            best = (idx, n, op_i)
    return best[0], best[2], best[1]


def per_reflection(name, hkl, frame, I, var, truth, sg, tol) -> dict:
    idx, op, _n = match_events(hkl, frame, truth["hkl"], truth["frame"], sg, tol)
    ok = (idx >= 0) & np.isfinite(I) & np.isfinite(var) & (var > 0)
    t = truth["photons"][idx[ok]]
    m = I[ok]
    z = (m - t) / np.sqrt(var[ok])
    strong = t >= 50
    weak = t < 200
    vs = t >= 1000
    q = m[vs] / t[vs]
    r = {"n": int(ok.sum()), "of": len(I), "op": op,
         "cc": pearson(m, t), "cc_strong": pearson(m[strong], t[strong]),
         "cc_weak": pearson(m[weak], t[weak]),
         "cc_log": pearson(np.log(np.maximum(m[t >= 20], 1)), np.log(t[t >= 20])),
         "median_ratio": float(np.median(m[strong] / t[strong])) if strong.any() else float("nan"),
         "ratio_1000": float(np.mean(q)) if vs.any() else float("nan"),
         "ratio_1000_std": float(np.std(q)) if vs.any() else float("nan"),
         "z_std": float(np.std(z)), "z_mean": float(np.mean(z)),
         "n_strong": int(strong.sum()), "_pairs": (truth["d_ev"][idx[ok]], m, t)}
    # how the error grows with the true photons
    bins = [0, 10, 50, 200, 1000, 5000, np.inf]
    r["by_photons"] = []
    for lo, hi in itertools.pairwise(bins):
        s = (t >= lo) & (t < hi)
        if s.sum() >= 5:
            r["by_photons"].append({"range": f"{lo:g}-{hi:g}", "n": int(s.sum()),
                                    "median_ratio": float(np.median(m[s] / np.maximum(t[s], 1e-9))),
                                    "rms_rel": float(np.sqrt(np.mean(((m[s] - t[s]) / np.maximum(t[s], 1)) ** 2))),
                                    "z_std": float(np.std(z[s])), "z_mean": float(np.mean(z[s]))})
    return r


def unweighted_merge(hkl, i_corr, sg) -> tuple[np.ndarray, np.ndarray]:
    """Unweighted mean of LP/partiality-corrected intensities per symmetry orbit: (keys, mean)."""
    key = sim.hkl_key(sim.canonical_hkl(hkl, sg))
    uk, inv = np.unique(key, return_inverse=True)
    return uk, np.bincount(inv, weights=i_corr) / np.bincount(inv)


def load_truth(path: Path) -> dict:
    with h5py.File(path, "r") as f:
        e = f["events"]
        t = {"hkl": np.stack([e["h"][()], e["k"][()], e["l"][()]], 1).astype(np.int64),
             "frame": e["frame"][()], "photons": e["photons"][()], "d_ev": e["d"][()]}
        m = f["merged"]
        mh = np.stack([m["h"][()], m["k"][()], m["l"][()]], 1).astype(np.int64)
        t["merged_key"] = sim.hkl_key(mh)
        t["merged_i"] = m["i_true"][()]
        t["merged_d"] = m["d"][()]
        t["sg"] = int(f.attrs["space_group"])
    return t


def collect(out: Path, info: dict, sg: int, truth: dict | None, args) -> dict:
    res: dict = {"jfx": {}, "dials": {}}
    # ---- jfx
    J = res["jfx"]
    jdir = out / "jfx"
    if (jdir / "console.log").exists():
        J.update(parse_jfx_console((jdir / "console.log").read_text(errors="replace")))
        J["times"] = json.loads((jdir / "times.json").read_text())
        ph = jdir / "out_process.h5"
        if ph.exists():
            from jfx.io.process_h5 import read_process_h5
            pf = read_process_h5(ph)
            mx = pf.groups.get("MX", {})
            if "peakIndexed" in mx and "nPeaks" in mx:
                J["indexed_fraction"] = float(np.sum(mx["peakIndexed"] > 0) / max(np.sum(mx["nPeaks"]), 1))
            if "rotation_lattice" in mx:
                J["cell"] = cell_from_basis(mx["rotation_lattice"])
            refl = pf.groups.get("reflections")
            if refl is not None and truth is not None:
                start = float(mx.get("scan_start_deg", 0.0))
                inc = float(mx.get("scan_increment_deg", info.get("scan", (0, 1))[1]))
                hkl = np.stack([refl["h"], refl["k"], refl["l"]], 1).astype(np.int64)
                frame = (np.asarray(refl["predicted_phi"], float) - start) / inc
                flags = np.asarray(refl["flags"])
                ok = (flags & (1 << 3)) > 0
                J["per_reflection_sum"] = per_reflection(
                    "jfx", hkl[ok], frame[ok], np.asarray(refl["int_sum"], float)[ok],
                    np.asarray(refl["int_sum_var"], float)[ok], truth, sg, args.frame_tol)
                okp = (flags & (1 << 4)) > 0
                part = np.asarray(refl["partiality"], float)
                lp = np.asarray(refl["lp"], float)
                u = okp & (part > 0.5) & (lp > 0)
                J["_unweighted"] = unweighted_merge(
                    hkl[u], np.asarray(refl["int_prf"], float)[u] / (lp[u] * part[u]), sg)
                if okp.sum() > 10:
                    J["per_reflection_prf"] = per_reflection(
                        "jfx", hkl[okp], frame[okp], np.asarray(refl["int_prf"], float)[okp],
                        np.asarray(refl["int_prf_var"], float)[okp], truth, sg, args.frame_tol)
        if (jdir / "out.mtz").exists():
            J["mtz"] = str(jdir / "out.mtz")
    # ---- DIALS
    D = res["dials"]
    ddir = out / "dials"
    if (ddir / "times.json").exists():
        x = dials_common(D, ddir, info["n_images"], args)
        n_img = info["n_images"]
        for k in ("rmsd_px", "rmsd_phi_deg", "rmsd_x_px", "rmsd_y_px"):
            if k in x:
                D[k] = float(x[k])
        if "cell" in x:
            D["cell"] = [float(v) for v in x["cell"]]
        if not info["rotation"]:
            D["images_indexed"] = f"{int(x.get('n_indexed_images', 0))}/{n_img}"
            if "rmsd_px_indexed" in x:
                D["rmsd_px"] = float(x["rmsd_px_indexed"])
        if (ddir / "dials.scale.log").exists():
            D.update(parse_dials_scale_log((ddir / "dials.scale.log").read_text()))
        if (ddir / "merged.mtz").exists():
            D["mtz"] = str(ddir / "merged.mtz")
        if truth is not None and "int_hkl" in x:
            ok = x["ok_sum"].astype(bool)
            frame = x["int_xyz"][:, 2]
            D["per_reflection_sum"] = per_reflection(
                "dials", x["int_hkl"][ok], frame[ok], x["int_sum"][ok], x["int_sum_var"][ok],
                truth, sg, args.frame_tol)
            if "ok_prf" in x and x["ok_prf"].sum() > 10:
                okp = x["ok_prf"].astype(bool)
                qe = x["qe"] if "qe" in x else np.ones(len(okp))
                u = okp & (x["partiality"] > 0.5) & (qe > 0)
                D["_unweighted"] = unweighted_merge(
                    x["int_hkl"][u], x["int_prf"][u] * x["lp"][u] / qe[u] / x["partiality"][u], sg)
                D["per_reflection_prf"] = per_reflection(
                    "dials", x["int_hkl"][okp], frame[okp], x["int_prf"][okp],
                    x["int_prf_var"][okp], truth, sg, args.frame_tol)
    # ---- merged: <I/sigma>, CC to truth per shell
    merged = {}
    for name, R in (("jfx", J), ("dials", D)):
        if "mtz" in R:
            hkl, i, s, d = read_mtz(Path(R["mtz"]))
            R["i_over_sigma_merged"] = float(np.mean(i / s))
            R["n_merged"] = len(i)
            R["d_min"] = float(d.min())
            merged[name] = (hkl, i, s, d)
    if truth is not None and merged:
        d_hi = max(v[3].min() for v in merged.values())
        d_lo = max(v[3].max() for v in merged.values())
        edges = (np.linspace(d_lo ** -3, d_hi ** -3, args.shells + 1)) ** (-1 / 3)
        res["shells"] = [f"{edges[k]:.2f}-{edges[k + 1]:.2f}" for k in range(args.shells)]
        for name, (hkl, i, s, d) in merged.items():
            R = res[name]
            found, ti = merged_cc(hkl, i, truth["merged_key"], truth["merged_i"], sg)
            sel = found & (d >= d_hi - 1e-6)
            R["cc_truth_overall"] = pearson(i[sel], ti[sel])
            R["cc_truth_shells"] = []
            R["n_shells"] = []
            for k in range(args.shells):
                hi_d, lo_d = edges[k], edges[k + 1]
                s_ = sel & (d <= hi_d + 1e-6) & (d > lo_d - 1e-6 if k == args.shells - 1 else d > lo_d)
                R["cc_truth_shells"].append(pearson(i[s_], ti[s_]))
                R["n_shells"].append(int(s_.sum()))
        # the same shells for an unweighted mean of each program's own corrected profile
        # intensities (partiality > 0.5): separates integration from scaling/merging
        order = np.argsort(truth["merged_key"])
        tk = truth["merged_key"][order]
        for name in ("jfx", "dials"):
            R = res[name]
            if "_unweighted" not in R:
                continue
            uk, mi = R.pop("_unweighted")
            pos = np.clip(np.searchsorted(tk, uk), 0, len(tk) - 1)
            found = tk[pos] == uk
            ti = truth["merged_i"][order][pos]
            d = truth["merged_d"][order][pos]
            R["cc_truth_shells_unweighted_prf"] = [
                pearson(mi[found & (d <= edges[k] + 1e-6) & (d > edges[k + 1] - 1e-6)],
                        ti[found & (d <= edges[k] + 1e-6) & (d > edges[k + 1] - 1e-6)])
                for k in range(args.shells)]
        # per-reflection CC to the true photons in the same shells
        for R in (J, D):
            for kind in ("sum", "prf"):
                pr = R.get(f"per_reflection_{kind}")
                if pr and "_pairs" in pr:
                    d, m, t = pr["_pairs"]
                    pr["cc_shells"] = [
                        pearson(m[(d <= edges[k] + 1e-6) & (d > edges[k + 1] - 1e-6)],
                                t[(d <= edges[k] + 1e-6) & (d > edges[k + 1] - 1e-6)])
                        for k in range(args.shells)]
    for R in (J, D):
        R.pop("_unweighted", None)
        for kind in ("sum", "prf"):
            if R.get(f"per_reflection_{kind}"):
                R[f"per_reflection_{kind}"].pop("_pairs", None)
    return res


# ----------------------------------------------------------------------------- stills metrics

def is_stills_truth(path: Path) -> bool:
    """True for the per-observation truth of ``simulate.py --size stills*``."""
    with h5py.File(path, "r") as f:
        return "observations" in f


def merged_z(I, sigma, I_true, d, edges=None) -> dict:
    """How well σ of merged intensities describes their error against the true |F|².

    The merged intensities are on an arbitrary scale, so the truth T is first brought onto
    theirs, ``z = (I − k T) / σ``, with k from least squares in two ways:

    * ``rms_z``: unweighted, k = Σ I·T / Σ T² (minimises Σ (I − k T)²; the strong
      reflections set k);
    * ``rms_z_w``: weighted, k = Σ I·T/σ² / Σ T²/σ² (minimises Σ z², the smallest rms z any
      overall scale gives);
    * ``rms_z_wb``: weighted with an overall B as well, model k·exp(−2 B s²)·T, s = 1/2d
      (B on a 0.25 Å² grid over ±100 Å², k in closed form for each B; the least Σ z²), in
      case a program leaves an overall B between merged and true intensities.

    rms z ≈ 1 when σ describes the scatter; > 1: σ too small (or a systematic error).
    ``rms_z_w_shells``: rms of the weighted z per shell of ``edges`` (1/d³), if given.

    Arrays (n,) of the same reflections; d in Å.
    """
    I, sigma, T, d = (np.asarray(x, float) for x in (I, sigma, I_true, d))
    ok = np.isfinite(I) & np.isfinite(T) & np.isfinite(sigma) & (sigma > 0)
    I, sigma, T, d = I[ok], sigma[ok], T[ok], d[ok]
    if len(I) < 3:
        return {"n": len(I)}
    w = 1.0 / sigma ** 2
    rms = lambda z: float(np.sqrt(np.mean(z * z)))
    k = float(np.sum(I * T) / np.sum(T * T))
    kw = float(np.sum(w * I * T) / np.sum(w * T * T))
    zw = (I - kw * T) / sigma
    s2 = 1.0 / (4.0 * d * d)
    best = None
    for b in np.arange(-100.0, 100.0001, 0.25):
        m = T * np.exp(-2.0 * b * s2)
        kb = np.sum(w * I * m) / np.sum(w * m * m)
        chi2 = np.sum(w * (I - kb * m) ** 2)
        if best is None or chi2 < best[0]:
            best = (chi2, float(b), float(kb), m)
    _, b, kb, m = best
    r = {"n": len(I), "k": k, "rms_z": rms((I - k * T) / sigma),
         "k_w": kw, "rms_z_w": rms(zw),
         "b": b, "k_b": kb, "rms_z_wb": rms((I - kb * m) / sigma)}
    if edges is not None:
        shell = np.clip(np.searchsorted(edges, 1.0 / d ** 3, "right") - 1, 0, len(edges) - 2)
        r["rms_z_w_shells"] = [rms(zw[shell == j]) if np.any(shell == j) else float("nan")
                               for j in range(len(edges) - 1)]
    return r


def stills_merged_metrics(hkl, I, sigma, truth: dict, edges: np.ndarray) -> dict:
    """Merged CC to the true |F|² of a stills simulation, as experiments/stills_diagnostic
    reports it: reflections matched by their Laue-group orbit (``diag.truth_of``), the
    truth's d, Pearson CC overall and per equal-volume shell (``diag.cc_by_shell``) over the
    reflections inside ``edges`` (1/d³; reflections beyond them are counted, not used),
    merged/true at d > 10 Å (``diag.low_res_ratio``) and :func:`merged_z`."""
    found, it, dd = diag.truth_of(np.asarray(hkl, np.int64), truth)
    v = 1.0 / dd ** 3
    inside = found & (v >= edges[0]) & (v <= edges[-1])
    cc, sh = diag.cc_by_shell(I[inside], it[inside], dd[inside], edges)
    shell = np.clip(np.searchsorted(edges, v[inside], "right") - 1, 0, len(edges) - 2)
    return {"n_merged": len(I), "n_in_truth": int(found.sum()),
            "n_used": int(inside.sum()), "n_outside_shells": int((found & ~inside).sum()),
            "cc_truth_overall": cc, "cc_truth_shells": sh.tolist(),
            "n_shells": np.bincount(shell, minlength=len(edges) - 1).tolist(),
            "low_res_ratio": diag.low_res_ratio(I[inside], it[inside], dd[inside]),
            "z": merged_z(I[inside], sigma[inside], it[inside], dd[inside], edges),
            "i_over_sigma_merged": float(np.mean(I[inside] / sigma[inside]))}


def common_cc(merged: dict, truth: dict, edges: np.ndarray) -> dict:
    """CC to truth per program, overall and per shell of ``edges``, over the reflections
    every program merged (inside the shells): ``{"n", "n_shells", name: cc,
    name + "_shells": [cc per shell]}``."""
    sets = {}
    for name, (hkl, _i, _s, _d) in merged.items():
        found, _it, dd = diag.truth_of(hkl, truth)
        v = 1.0 / dd ** 3
        sets[name] = sim.hkl_key(sim.canonical_hkl(hkl, diag.SG)), found & (v >= edges[0]) & (v <= edges[-1])
    common = None
    for key, sel in sets.values():
        common = key[sel] if common is None else np.intersect1d(common, key[sel])
    out: dict = {"n": len(common)}
    for name, (hkl, i, _s, _d) in merged.items():
        key, sel = sets[name]
        m = sel & np.isin(key, common)
        _found, it, dd = diag.truth_of(hkl[m], truth)
        cc, sh = diag.cc_by_shell(i[m], it, dd, edges)
        out[name], out[name + "_shells"] = cc, sh.tolist()
        shell = np.clip(np.searchsorted(edges, 1.0 / dd ** 3, "right") - 1, 0, len(edges) - 2)
        out["n_shells"] = np.bincount(shell, minlength=len(edges) - 1).tolist()
    return out


def dials_common(D: dict, ddir: Path, n_img: int, args) -> dict:
    """Fill ``D`` with what every DIALS run has (stage times, spots per image, indexed
    fraction, median indexed cell) from ``ddir`` (extracted by dials_extract.py in DIALS's
    Python); returns the extracted arrays."""
    D["times"] = json.loads((ddir / "times.json").read_text())
    npz = ddir / "extract.npz"
    subprocess.run([args.dials_python, str(HERE / "dials_extract.py"), str(ddir), str(npz)],
                   env=dials_env(), check=True)
    x = dict(np.load(npz))
    if "strong_z" in x:
        D["spots_per_image"] = len(x["strong_z"]) / n_img
        if "n_indexed" in x:
            D["indexed_fraction"] = float(x["n_indexed"]) / len(x["strong_z"])
    if "cells_indexed" in x and len(x["cells_indexed"]):
        D["cell"] = [float(v) for v in np.median(x["cells_indexed"], axis=0)]
    return x


def collect_stills(out: Path, info: dict, truth: dict | None, args) -> dict:
    res: dict = {"jfx": {}, "dials": {}}
    n_img = info["n_images"]
    J = res["jfx"]
    jdir = out / "jfx"
    if (jdir / "console.log").exists():
        J.update(parse_jfx_console((jdir / "console.log").read_text(errors="replace")))
        if (jdir / "times.json").exists():
            J["times"] = json.loads((jdir / "times.json").read_text())
        if (jdir / "out.mtz").exists():
            J["mtz"] = str(jdir / "out.mtz")
    D = res["dials"]
    ddir = out / "dials"
    if (ddir / "times.json").exists():
        x = dials_common(D, ddir, n_img, args)
        for key, name in (("n_indexed_images", "images_indexed"),
                          ("n_integrated_images", "images_integrated"),
                          ("n_scaled_images", "images_scaled")):
            if key in x:
                D[name] = f"{int(x[key])}/{n_img}"
        if "n_integrated_refl" in x:
            D["integrated"] = str(int(x["n_integrated_refl"]))
        if "rmsd_px_indexed" in x:
            D["rmsd_px"] = float(x["rmsd_px_indexed"])
        if (ddir / "dials.scale.log").exists():
            D.update(parse_dials_scale_log((ddir / "dials.scale.log").read_text()))
        if (ddir / "merged.mtz").exists():
            D["mtz"] = str(ddir / "merged.mtz")
    merged = {}
    for name, R in (("jfx", J), ("dials", D)):
        if "mtz" in R:
            hkl, i, s, d = read_mtz(Path(R["mtz"]))
            R["d_min"] = float(d.min())
            merged[name] = (hkl, i, s, d)
    if truth is not None and merged:
        # the shells of experiments/stills_diagnostic: equal volume over the truth d of the
        # reflections jfx merged (so the rows match its table); DIALS's if jfx has no MTZ
        src = "jfx" if "jfx" in merged else "dials"
        found, _it, dd = diag.truth_of(merged[src][0], truth)
        edges = diag.shell_edges(dd[found], args.shells)
        dmax = (1.0 / edges) ** (1 / 3)
        res["shell_source"] = src
        res["shell_d"] = dmax.tolist()
        res["shells"] = [f"{dmax[k]:.2f}-{dmax[k + 1]:.2f}" for k in range(args.shells)]
        for name, (hkl, i, s, d) in merged.items():
            res[name].update(stills_merged_metrics(hkl, i, s, truth, edges))
        if len(merged) > 1:
            res["common"] = common_cc(merged, truth, edges)
    return res


# ----------------------------------------------------------------------------- table

def _f(v, fmt="{:.3f}"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return fmt.format(v) if not isinstance(v, str) else v


def table(res: dict, info: dict) -> str:
    J, D = res["jfx"], res["dials"]
    rows = []
    add = lambda k, a, b: rows.append(f"| {k} | {a} | {b} |")
    jt = J.get("times", {})
    dt = D.get("times", {})
    parts = J.get("parts", {})
    add("wall time, whole run (s)", _f(jt.get("total (wall)"), "{:.1f}"),
        _f(dt.get("total (wall)"), "{:.1f}"))
    stage_map = [("import / setup", "setup", "import"), ("spot finding", "spotfind", "find_spots"),
                 ("indexing", "index", "index"), ("refinement", "refine", "refine"),
                 ("integration", "integrate", "integrate"), ("scaling", "scale", "scale"),
                 ("merging", None, "merge")]
    for lab, jk, dk in stage_map:
        add(f"  {lab} (s)", _f(parts.get(jk), "{:.1f}") if jk else
            ("(in scaling)" if info["rotation"] else "–"),
            _f(dt.get(dk), "{:.1f}"))
    add("spots per image", _f(J.get("spots_per_image"), "{:.0f}") + " (2D)",
        _f(D.get("spots_per_image"), "{:.0f}") + (" (3D)" if info["rotation"] else " (2D)"))
    if J.get("images_indexed") or D.get("images_indexed"):
        add("images indexed", J.get("images_indexed", "–"), D.get("images_indexed", "–"))
    add("indexed fraction of spots", _f(J.get("indexed_fraction")), _f(D.get("indexed_fraction")))
    fc = lambda c: " ".join(f"{v:.3f}" for v in c[:3]) + " / " + " ".join(f"{v:.2f}" for v in c[3:]) if c else "–"
    add("cell (Å / °)", fc(J.get("cell")), fc(D.get("cell")))
    add("refinement rmsd (px)", _f(J.get("rmsd_px")), _f(D.get("rmsd_px")))
    add("refinement rmsd φ (°)", _f(J.get("rmsd_phi_deg")), _f(D.get("rmsd_phi_deg")))
    add("merged reflections", _f(J.get("n_merged"), "{:d}"), _f(D.get("n_merged"), "{:d}"))
    add("CC1/2 (own table, overall)", _f(J.get("cc_half"), "{:.4f}"), _f(D.get("cc_half"), "{:.4f}"))
    add("<I/σ> own table, overall", _f(J.get("i_over_sigma_own"), "{:.2f}"),
        _f(D.get("i_over_sigma_own"), "{:.2f}"))
    add("<I/σ> merged MTZ (mean IMEAN/SIGIMEAN)", _f(J.get("i_over_sigma_merged"), "{:.2f}"),
        _f(D.get("i_over_sigma_merged"), "{:.2f}"))
    if "cc_truth_overall" in J or "cc_truth_overall" in D:
        add("merged CC to truth, overall", _f(J.get("cc_truth_overall"), "{:.4f}"),
            _f(D.get("cc_truth_overall"), "{:.4f}"))
        for k, sh in enumerate(res.get("shells", [])):
            jc = J.get("cc_truth_shells", [None] * 99)[k]
            dc = D.get("cc_truth_shells", [None] * 99)[k]
            jn = J.get("n_shells", [0] * 99)[k]
            dn = D.get("n_shells", [0] * 99)[k]
            add(f"  shell {sh} Å", f"{_f(jc, '{:.4f}')} ({jn})", f"{_f(dc, '{:.4f}')} ({dn})")
    if "cc_truth_shells_unweighted_prf" in J or "cc_truth_shells_unweighted_prf" in D:
        for k, sh in enumerate(res.get("shells", [])):
            jc = J.get("cc_truth_shells_unweighted_prf", [None] * 99)[k]
            dc = D.get("cc_truth_shells_unweighted_prf", [None] * 99)[k]
            add(f"  unweighted mean of own prf, shell {sh} Å", _f(jc, "{:.4f}"), _f(dc, "{:.4f}"))
    for kind in ("sum", "prf"):
        a, b = J.get(f"per_reflection_{kind}"), D.get(f"per_reflection_{kind}")
        if a or b:
            g = lambda r, k, fm="{:.4f}": _f(r.get(k), fm) if r else "–"
            add(f"per-reflection {kind} CC to true photons", g(a, "cc"), g(b, "cc"))
            add("  same, true ≥ 50 photons", g(a, "cc_strong"), g(b, "cc_strong"))
            add("  same, true < 200 photons", g(a, "cc_weak"), g(b, "cc_weak"))
            add("  CC of log I vs log true (true ≥ 20)", g(a, "cc_log"), g(b, "cc_log"))
            add("  I/true mean ± std (true ≥ 1000)",
                f"{g(a, 'ratio_1000')} ± {g(a, 'ratio_1000_std')}",
                f"{g(b, 'ratio_1000')} ± {g(b, 'ratio_1000_std')}")
            for k, sh in enumerate(res.get("shells", [])):
                jc = a.get("cc_shells", [None] * 99)[k] if a else None
                dc = b.get("cc_shells", [None] * 99)[k] if b else None
                add(f"  same, shell {sh} Å", _f(jc, "{:.4f}"), _f(dc, "{:.4f}"))
            add("  matched / integrated", f"{g(a, 'n', '{:d}')}/{g(a, 'of', '{:d}')}",
                f"{g(b, 'n', '{:d}')}/{g(b, 'of', '{:d}')}")
            add("  median I/true (true ≥ 50)", g(a, "median_ratio"), g(b, "median_ratio"))
            add("  std of (I − true)/σ", g(a, "z_std", "{:.2f}"), g(b, "z_std", "{:.2f}"))
    head = "| | jfx | DIALS 3.12 |\n| --- | --- | --- |\n"
    out = head + "\n".join(rows) + "\n"
    # photon bins of the per-reflection sums
    for kind in ("sum", "prf"):
        a, b = J.get(f"per_reflection_{kind}"), D.get(f"per_reflection_{kind}")
        if a and b:
            out += (f"\nPer-reflection {kind} intensity by true photons (median I/true, rms "
                    "relative error, std and mean of (I − true)/σ), jfx | DIALS:\n\n"
                    "| true photons | n jfx | jfx ratio | jfx rms rel | jfx z std / mean "
                    "| n DIALS | DIALS ratio | DIALS rms rel | DIALS z std / mean |\n"
                    "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
            bd = {r["range"]: r for r in b["by_photons"]}
            for r in a["by_photons"]:
                q = bd.get(r["range"])
                qq = (f"{q['n']} | {q['median_ratio']:.3f} | {q['rms_rel']:.3f} | "
                      f"{q['z_std']:.2f} / {q['z_mean']:+.2f}") if q else "– | – | – | –"
                out += (f"| {r['range']} | {r['n']} | {r['median_ratio']:.3f} | {r['rms_rel']:.3f} "
                        f"| {r['z_std']:.2f} / {r['z_mean']:+.2f} | {qq} |\n")
    return out


def table_stills(res: dict, info: dict) -> str:
    """Side-by-side markdown table of a stills run (collect_stills)."""
    J, D = res["jfx"], res["dials"]
    rows = []
    add = lambda k, a, b: rows.append(f"| {k} | {a} | {b} |")
    jt, dt = J.get("times", {}), D.get("times", {})
    jp = {**J.get("stage_s", {}), **J.get("parts", {})}
    add("wall time, whole run (s)", _f(jt.get("total (wall)"), "{:.1f}"),
        _f(dt.get("total (wall)"), "{:.1f}"))
    for lab, jk, dk in (("import / setup", "setup", "import"),
                        ("spot finding", "spotfind", "find_spots"),
                        ("indexing (DIALS: ssx_index)", "index", "ssx_index"),
                        ("refinement", "refine", None),
                        ("integration (DIALS: ssx_integrate, incl. its refinement)",
                         "integrate", "ssx_integrate"),
                        ("scaling", "scale", "scale"), ("merging", None, "merge")):
        add(f"  {lab} (s)", _f(jp.get(jk), "{:.1f}") if jk else "(in scaling)",
            _f(dt.get(dk), "{:.1f}") if dk else "(in integration)")
    n = info["n_images"]
    add("spots per image", _f(J.get("spots_per_image"), "{:.0f}"), _f(D.get("spots_per_image"), "{:.0f}"))
    add("images indexed", J.get("images_indexed", "–"), D.get("images_indexed", "–"))
    add("images integrated", f"{J['images_integrated']}/{n}" if "images_integrated" in J else "–",
        D.get("images_integrated", "–"))
    add("images merged (jfx: integrated − rejected; DIALS: in scaled.expt)",
        f"{int(J['images_integrated']) - J.get('images_rejected', 0)}/{n}"
        if "images_integrated" in J else "–", D.get("images_scaled", "–"))
    add("integrated reflections", J.get("integrated", "–"), D.get("integrated", "–"))
    fc = lambda c: " ".join(f"{v:.2f}" for v in c[:3]) + " / " + " ".join(f"{v:.1f}" for v in c[3:]) if c else "–"
    add("cell (Å / °; DIALS: median of indexed)", fc(J.get("cell")), fc(D.get("cell")))
    add("merged reflections (in truth, in the shells)",
        f"{_f(J.get('n_merged'), '{:d}')} ({_f(J.get('n_in_truth'), '{:d}')}, {_f(J.get('n_used'), '{:d}')})",
        f"{_f(D.get('n_merged'), '{:d}')} ({_f(D.get('n_in_truth'), '{:d}')}, {_f(D.get('n_used'), '{:d}')})")
    add("merged d_min (Å)", _f(J.get("d_min"), "{:.2f}"), _f(D.get("d_min"), "{:.2f}"))
    add("CC1/2 (own table, overall)", _f(J.get("cc_half"), "{:.4f}"), _f(D.get("cc_half"), "{:.4f}"))
    add("<I/σ> merged (mean IMEAN/SIGIMEAN, in the shells)",
        _f(J.get("i_over_sigma_merged"), "{:.2f}"), _f(D.get("i_over_sigma_merged"), "{:.2f}"))
    if "cc_truth_overall" in J or "cc_truth_overall" in D:
        add("merged CC to truth, overall", _f(J.get("cc_truth_overall"), "{:.4f}"),
            _f(D.get("cc_truth_overall"), "{:.4f}"))
        if "common" in res:
            c = res["common"]
            add(f"  same, on the {c['n']} reflections both merged", _f(c.get("jfx"), "{:.4f}"),
                _f(c.get("dials"), "{:.4f}"))
        def shell_cell(R, k):
            if "cc_truth_shells" not in R:
                return "–"
            return f"{_f(R['cc_truth_shells'][k], '{:.4f}')} ({R['n_shells'][k]})"

        for k, sh in enumerate(res.get("shells", [])):
            add(f"  shell {sh} Å", shell_cell(J, k), shell_cell(D, k))
        add("merged/true at d > 10 Å (low_res_ratio)", _f(J.get("low_res_ratio"), "{:.2f}"),
            _f(D.get("low_res_ratio"), "{:.2f}"))
        z = lambda R, k, fm="{:.2f}": _f(R.get("z", {}).get(k), fm)
        add("rms (I − k·true)/σ, k = Σ I·true / Σ true²", z(J, "rms_z"), z(D, "rms_z"))
        add("  same, k weighted by 1/σ² (least Σ z²)", z(J, "rms_z_w"), z(D, "rms_z_w"))
        add("  same, k·exp(−2Bs²), k and B weighted least squares",
            f"{z(J, 'rms_z_wb')} (B {z(J, 'b', '{:+.2f}')} Å²)",
            f"{z(D, 'rms_z_wb')} (B {z(D, 'b', '{:+.2f}')} Å²)")
        for k, sh in enumerate(res.get("shells", [])):
            zs = lambda R, k=k: _f(R["z"]["rms_z_w_shells"][k], "{:.2f}") \
                if "rms_z_w_shells" in R.get("z", {}) else "–"
            add(f"  rms z (weighted k), shell {sh} Å", zs(J), zs(D))
        add("error model (own): a, b", J.get("error_model", "–"), D.get("error_model", "–"))
    if dt.get("failed"):
        add("DIALS stopped", "", dt["failed"])
    out = "| | jfx | DIALS 3.12 (ssx) |\n| --- | --- | --- |\n" + "\n".join(rows) + "\n"
    c = res.get("common")
    if c and "jfx_shells" in c and "dials_shells" in c:
        out += (f"\nOn the {c['n']} reflections both programs merged (per shell: "
                + " ".join(str(n) for n in c["n_shells"]) + "):\n\n"
                "| program | merged CC to truth | per shell (low → high resolution) |\n"
                "|---|---|---|\n")
        for name, key in (("jfx", "jfx"), ("DIALS", "dials")):
            out += (f"| {name} | {c[key]:.3f} | "
                    + " ".join(f"{x:.2f}" for x in c[key + "_shells"]) + " |\n")
    if res.get("shell_d"):
        dd = res["shell_d"]
        out += (f"\nShells (equal volume in 1/d³ over the truth d of the reflections "
                f"{res['shell_source']} merged, as experiments/stills_diagnostic), d from "
                f"{dd[0]:.1f} to {dd[-1]:.2f} Å: " + " ".join(f"{x:.2f}" for x in dd[1:]) + "\n\n"
                "| program | merged CC to truth | merged/true at d > 10 Å | rms z (k) "
                "| per shell (low → high resolution) |\n|---|---|---|---|---|\n")
        for name, R in (("jfx", J), ("DIALS", D)):
            if "cc_truth_shells" in R:
                out += (f"| {name} | {R['cc_truth_overall']:.3f} | {R['low_res_ratio']:.2f} | "
                        f"{z(R, 'rms_z')} | "
                        + " ".join(f"{x:.2f}" for x in R["cc_truth_shells"]) + " |\n")
    return out


# ----------------------------------------------------------------------------- main

def anomalous_scores(out: Path, truth_path: Path, res: dict) -> str:
    """Score jfx's and DIALS's merged MTZs with experiments/anomalous_diagnostic/score.py
    (CC of I(+) − I(−) to the true difference); figures into ``res["anomalous"]``."""
    spec = importlib.util.spec_from_file_location(
        "anomalous_score", HERE.parent / "anomalous_diagnostic" / "score.py")
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    try:
        truth = score.read_truth(truth_path)
    except ValueError as exc:
        log(f"no anomalous scores: {exc}")
        return ""
    txt, res["anomalous"] = ["", "Anomalous (experiments/anomalous_diagnostic/score.py):"], {}
    for name, mtz in (("jfx", out / "jfx" / "out.mtz"), ("DIALS", out / "dials" / "merged.mtz")):
        if not mtz.exists():
            continue
        try:
            r = score.score(score.read_mtz(mtz), truth)
        except ValueError as exc:
            txt.append(f"{name}: {exc}")
            continue
        res["anomalous"][name] = r
        txt.append(score.report(r, name))
    return "\n".join(txt) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="jfx vs DIALS side by side on one data set",
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--simulate", choices=["tiny", "small", "full", "anomalous_small",
                                             "anomalous"],
                     help="simulate (simulate.py) into OUT/sim (reused if its parameters match)")
    src.add_argument("--master", type=Path, help="an existing rotation or stills master file")
    ap.add_argument("--space-group", type=int, default=None,
                    help="space-group number (default: the master's, or 96 for --simulate)")
    ap.add_argument("--truth", type=Path, default=None,
                    help="truth file (simulate.py layout; rotation or --size stills*)")
    ap.add_argument("--unit-cell", default=None, metavar="a,b,c,al,be,ga",
                    help="known cell for both programs (jfx -C, DIALS unit_cell=)")
    ap.add_argument("-o", "--out", type=Path, default=Path("/tmp/peer"))
    ap.add_argument("--sim-set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="override simulation parameters (simulate.SimParams fields)")
    ap.add_argument("--skip-jfx", action="store_true", help="reuse OUT/jfx from an earlier run")
    ap.add_argument("--skip-dials", action="store_true", help="reuse OUT/dials from an earlier run")
    ap.add_argument("--anomalous", action="store_true",
                    help="Friedel mates apart: jfx -A, dials.scale/merge anomalous=True "
                         "(score with experiments/anomalous_diagnostic/score.py)")
    ap.add_argument("--jfx-args", default="", help="extra jfjoch_process arguments (one string)")
    ap.add_argument("--nproc", type=int, default=2, help="DIALS nproc (find_spots, integrate)")
    ap.add_argument("--dials-python", default="/usr/bin/python3",
                    help="the Python DIALS is installed in (reads its reflection tables)")
    ap.add_argument("--shells", type=int, default=None,
                    help="resolution shells of the CC to truth (default 8 rotation, 10 stills)")
    ap.add_argument("--frame-tol", type=float, default=1.5,
                    help="max |frame difference| when matching a reflection to a true event")
    args = ap.parse_args(argv)
    if args.simulate and args.simulate.startswith("anomalous"):
        args.anomalous = True
    out = args.out
    out.mkdir(parents=True, exist_ok=True)

    if args.simulate:
        p = sim.SimParams.preset(args.simulate)
        for kv in args.sim_set:
            k, _, v = kv.partition("=")
            if not hasattr(p, k):
                print(f"error: unknown simulation parameter {k!r}", file=sys.stderr)
                return 2
            try:
                setattr(p, k, sim.parse_value(getattr(p, k), v))
            except ValueError as exc:
                print(f"error: {k}: {exc}", file=sys.stderr)
                return 2
        sdir = out / "sim"
        master, truth_path = sdir / "sim_master.h5", sdir / "sim_truth.h5"
        import dataclasses
        want = json.dumps(dataclasses.asdict(p))
        have = None
        if truth_path.exists() and master.exists():
            with h5py.File(truth_path, "r") as f:
                have = f.attrs.get("params")
        if have != want:
            shutil.rmtree(sdir, ignore_errors=True)
            t0 = time.perf_counter()
            sim.simulate(p, sdir, log=log)
            log(f"simulation: {time.perf_counter() - t0:.1f} s")
        else:
            log(f"reusing the simulation in {sdir}")
        sg = args.space_group or sim.SPACE_GROUP
    else:
        master = args.master
        if not master.exists():
            print(f"error: {master} does not exist", file=sys.stderr)
            return 2
        truth_path = args.truth
        sg = args.space_group
    info = master_info(master)
    sg = sg or info.get("space_group")
    if not sg and info["rotation"]:
        print("error: no space group (give --space-group)", file=sys.stderr)
        return 2
    if truth_path and not truth_path.exists():
        print(f"error: {truth_path} does not exist", file=sys.stderr)
        return 2
    stills_truth = bool(truth_path) and is_stills_truth(truth_path)
    if truth_path and stills_truth == info["rotation"]:
        print(f"error: {truth_path} is a {'stills' if stills_truth else 'rotation'} truth file "
              f"but {master} holds {'rotation' if info['rotation'] else 'stills'} data",
              file=sys.stderr)
        return 2
    if stills_truth and sg != diag.SG:
        print(f"error: stills truth is matched in space group {diag.SG} only (got {sg})",
              file=sys.stderr)
        return 2
    if args.shells is None:
        args.shells = 8 if info["rotation"] else 10
    truth = (diag.read_truth(truth_path) if stills_truth else load_truth(truth_path)) \
        if truth_path else None
    extra = shlex.split(args.jfx_args)
    try:
        if not args.skip_jfx:
            run_jfx(master, out / "jfx", sg, extra + (["-A"] if args.anomalous else []),
                    info["rotation"], args.unit_cell)
        if not args.skip_dials:
            run_dials(master, out / "dials", info, sg, args.nproc, args.unit_cell,
                      args.anomalous)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if info["rotation"]:
        res = collect(out, info, sg, truth, args)
    else:
        res = collect_stills(out, info, truth, args)
    anom_txt = ""
    if args.anomalous and truth_path and info["rotation"]:
        anom_txt = anomalous_scores(out, truth_path, res)
    res["master"] = str(master)
    res["n_images"] = info["n_images"]
    (out / "results.json").write_text(json.dumps(res, indent=1, default=float))
    txt = (f"Data: {master} ({info['n_images']} {'images' if info['rotation'] else 'stills'}, "
           f"space group {sg}{', truth ' + str(truth_path) if truth_path else ''})\n\n"
           + (table(res, info) if info["rotation"] else table_stills(res, info)) + anom_txt)
    (out / "table.md").write_text(txt)
    print(txt)
    return 0


if __name__ == "__main__":
    sys.exit(main())

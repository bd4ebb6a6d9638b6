"""Run by DIALS's own Python (``/usr/bin/python3`` for the Debian package): DIALS outputs → npz.

    python3 dials_extract.py DIALS_DIR OUT.npz

Reads whatever of strong.refl, indexed.refl, refined.expt/refl, integrated.refl (rotation)
and integrated_<batch>.expt/refl + scaled.expt (stills, dials.ssx_integrate) exists in
DIALS_DIR and writes plain arrays (no DIALS types) for run.py, which runs in jfx's Python.
Refinement rmsd is over ``used_in_refinement`` reflections: position sqrt(<dx² + dy²>) (px,
from xyzobs.px.value − xyzcal.px) and φ (deg, from xyzobs.mm.value − xyzcal.mm).
"""

import glob
import math
import os
import sys

import numpy as np
from dials.array_family import flex


def _np(a):
    return np.asarray(a.as_numpy_array())


def _xyz(col):
    x, y, z = col.parts()
    return np.stack([_np(x), _np(y), _np(z)], axis=1)


def image_key(e):
    """(file, image index) of a still's experiment: experiments of one image share it."""
    try:
        return (e.imageset.paths()[0], int(e.imageset.indices()[0]))
    except Exception:  # noqa: BLE001 (older dxtbx: no indices())
        return (id(e.imageset), 0)


def main(d, out):
    from dxtbx.model.experiment_list import ExperimentListFactory

    res = {}
    p = os.path.join(d, "strong.refl")
    if os.path.exists(p):
        r = flex.reflection_table.from_file(p)
        res["strong_z"] = _xyz(r["xyzobs.px.value"])[:, 2]
        res["strong_id"] = _np(r["id"])
    p = os.path.join(d, "indexed.refl")
    if os.path.exists(p):
        r = flex.reflection_table.from_file(p)
        ind = r.get_flags(r.flags.indexed)
        res["n_indexed"] = np.int64(ind.count(True))
        res["n_indexed_input"] = np.int64(len(r))
        res["indexed_z"] = _xyz(r["xyzobs.px.value"])[:, 2][_np(ind).astype(bool)]
    p = os.path.join(d, "indexed.expt")
    if os.path.exists(p):
        el = ExperimentListFactory.from_json_file(p, check_format=False)
        res["n_indexed_images"] = np.int64(len({image_key(e) for e in el}))
        res["cells_indexed"] = np.array([e.crystal.get_unit_cell().parameters() for e in el])
        q = os.path.join(d, "indexed.refl")
        if os.path.exists(q):
            r = flex.reflection_table.from_file(q)
            r = r.select(r.get_flags(r.flags.indexed))
            if len(r) and "xyzcal.px" in r:
                o = _xyz(r["xyzobs.px.value"])
                c = _xyz(r["xyzcal.px"])
                res["rmsd_px_indexed"] = np.float64(
                    math.sqrt(np.mean(np.sum((o[:, :2] - c[:, :2]) ** 2, 1))))
    # stills (dials.ssx_integrate batches, dials.scale): images and reflections kept
    batches = sorted(glob.glob(os.path.join(d, "integrated_*.expt")))
    if batches:
        keys = set()
        n_refl = 0
        for p in batches:
            el = ExperimentListFactory.from_json_file(p, check_format=False)
            keys |= {image_key(e) for e in el}
            r = flex.reflection_table.from_file(p[: -len(".expt")] + ".refl")
            n_refl += r.get_flags(r.flags.integrated, all=False).count(True)
        res["n_integrated_images"] = np.int64(len(keys))
        res["n_integrated_refl"] = np.int64(n_refl)
        p = os.path.join(d, "scaled.expt")
        if os.path.exists(p):
            el = ExperimentListFactory.from_json_file(p, check_format=False)
            res["n_scaled_images"] = np.int64(len({image_key(e) for e in el}))
    p = os.path.join(d, "refined.expt")
    if os.path.exists(p):
        el = ExperimentListFactory.from_json_file(p, check_format=False)
        res["cell"] = np.array(el[0].crystal.get_unit_cell().parameters())
        res["n_crystals"] = np.int64(len(el.crystals()))
        if el[0].scan is not None:
            res["oscillation"] = np.array(el[0].scan.get_oscillation())
    p = os.path.join(d, "refined.refl")
    if os.path.exists(p):
        r = flex.reflection_table.from_file(p)
        sel = r.get_flags(r.flags.used_in_refinement)
        r = r.select(sel)
        o = _xyz(r["xyzobs.px.value"])
        c = _xyz(r["xyzcal.px"])
        res["rmsd_px"] = np.float64(math.sqrt(np.mean(np.sum((o[:, :2] - c[:, :2]) ** 2, 1))))
        res["rmsd_x_px"] = np.float64(math.sqrt(np.mean((o[:, 0] - c[:, 0]) ** 2)))
        res["rmsd_y_px"] = np.float64(math.sqrt(np.mean((o[:, 1] - c[:, 1]) ** 2)))
        om = _xyz(r["xyzobs.mm.value"])
        cm = _xyz(r["xyzcal.mm"])
        if np.any(om[:, 2] != 0):
            res["rmsd_phi_deg"] = np.float64(math.degrees(math.sqrt(np.mean((om[:, 2] - cm[:, 2]) ** 2))))
        res["n_refined"] = np.int64(len(r))
    p = os.path.join(d, "integrated.refl")
    if os.path.exists(p):
        r = flex.reflection_table.from_file(p)
        mi = r["miller_index"]
        h = np.array([m[0] for m in mi]); k = np.array([m[1] for m in mi])
        l = np.array([m[2] for m in mi])
        res["int_hkl"] = np.stack([h, k, l], 1).astype(np.int64)
        res["int_xyz"] = _xyz(r["xyzcal.px"])
        res["int_sum"] = _np(r["intensity.sum.value"])
        res["int_sum_var"] = _np(r["intensity.sum.variance"])
        if "intensity.prf.value" in r:
            res["int_prf"] = _np(r["intensity.prf.value"])
            res["int_prf_var"] = _np(r["intensity.prf.variance"])
            res["ok_prf"] = _np(r.get_flags(r.flags.integrated_prf))
        res["ok_sum"] = _np(r.get_flags(r.flags.integrated_sum))
        res["partiality"] = _np(r["partiality"])
        res["d"] = _np(r["d"])
        res["lp"] = _np(r["lp"])
        if "qe" in r:
            res["qe"] = _np(r["qe"])
        if "num_pixels.foreground" in r:
            res["n_fg"] = _np(r["num_pixels.foreground"])
    np.savez(out, **res)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

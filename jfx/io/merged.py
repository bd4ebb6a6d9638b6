"""Merged-reflection files (MTZ, mmCIF, plain text), per-image scale files, reference MTZ input.

File contract: /work/shared/reference/FORMATS.md "Merged reflections".

* MTZ (``<prefix>.mtz``): columns ``H K L`` (type H), ``IMEAN`` (J), ``SIGIMEAN`` (Q),
  ``N_obs`` (type I, the MTZ integer column type); with anomalous data also ``I(+)``
  ``SIGI(+)`` ``I(-)`` ``SIGI(-)`` (K/M) and ``N(+)`` ``N(-)`` (I: observations merged into
  I(+), I(−)), the labels and types AIMLESS and ``dials.merge`` write.  An acentric
  reflection with one Friedel half unmeasured has NaN (missing) there and N = 0.  Centric
  reflections (Friedel mates are one measurement) carry I(+) = I(−) = IMEAN and
  N(+) = N(−) = N_obs, so I(+) − I(−) = 0 there; readers take centrics from the (+)
  columns (e.g. ``reciprocalspaceship``'s ``stack_anomalous``) or skip them by symmetry.  Cell
  and space group set, rows in the CCP4 ASU sorted by h, k, l; missing values are NaN (the
  MTZ missing-number flag).  No DANO/F columns (they need French–Wilson amplitudes).
* mmCIF (``<prefix>.cif``): ``_cell``, ``_symmetry`` (``space_group_name_H-M``,
  ``Int_Tables_number``) and a ``_refln`` loop ``index_h/k/l``, ``intensity_meas``,
  ``intensity_sigma`` (+ ``pdbx_I_plus``, ``pdbx_I_plus_sigma``, ``pdbx_I_minus``,
  ``pdbx_I_minus_sigma`` when anomalous); missing values are ``?``.
* Text (``<prefix>.hkl``): ``#`` header lines with cell and space group, then ``h k l I sigma
  n``.  With anomalous data each I(+) is written with its ASU index ``h k l`` and each I(−) with
  ``−h −k −l`` (centric reflections once), so Friedel pairs stay separate.
* ``<prefix>_iterN_scale.dat``: one line per image, ``image scale bfactor cc rejected``.

Each file is built in memory and written through :mod:`jfx.io.output_set`: alone (atomic:
temporary file in the same directory, then ``os.replace``; a full disk is one
:class:`ProcessingError` line), or, with ``outputs=``, as part of the output set of a run
(moved into place together with the run's other outputs).
"""

from __future__ import annotations

import os
from pathlib import Path

import gemmi
import numpy as np

from jfx.io.errors import InputError
from jfx.io.h5util import one_line
from jfx.io.output_set import OutputSet, write_one
from jfx.models.merged import MergedReflections
from jfx.symmetry import groups

MERGED_EXTENSIONS = {"mtz": ".mtz", "cif": ".cif", "txt": ".hkl"}

# Reference MTZ columns, in order of preference.
_I_LABELS = ("IMEAN", "I", "I-obs", "IOBS", "I_obs", "I-OBS", "IOBS-obs")
_F_LABELS = ("FP", "F", "FOBS", "F-obs", "F_obs", "FOBS-obs", "F-model", "FMODEL", "FC", "FCALC",
             "FC_ALL")


def _sg(merged: MergedReflections) -> gemmi.SpaceGroup:
    return groups.space_group(int(merged.space_group))


def _write(path: Path, data: bytes | str, outputs: OutputSet | None) -> Path:
    if outputs is not None:
        outputs.add(path, data)
    else:
        write_one(path, data)
    return path


def write_mtz(path: str | os.PathLike, merged: MergedReflections,
              wavelength_A: float | None = None, title: str = "jfx merged intensities", *,
              outputs: OutputSet | None = None) -> Path:
    """Write ``merged`` as an MTZ file (columns: module docstring).

    Args:
        path: output file.
        merged: :class:`~jfx.models.merged.MergedReflections`.
        wavelength_A: dataset wavelength (Å) stored in the MTZ dataset header (0 if unknown).
        title: MTZ title.
        outputs: the output set the file joins (None: written on its own, atomically).

    Returns:
        The path written.
    """
    path = Path(path)
    mtz = gemmi.Mtz(with_base=True)  # HKL_base dataset + H K L columns
    mtz.title = title
    mtz.spacegroup = _sg(merged)
    mtz.set_cell_for_all(gemmi.UnitCell(*[float(x) for x in merged.cell]))
    ds = mtz.add_dataset("jfx")
    ds.project_name = "jfx"
    ds.crystal_name = "crystal"
    ds.wavelength = float(wavelength_A) if wavelength_A is not None else 0.0
    cols = [("IMEAN", "J", merged.I), ("SIGIMEAN", "Q", merged.sigma),
            ("N_obs", "I", merged.n_obs)]
    if merged.anomalous:
        cols += [("I(+)", "K", merged.I_plus), ("SIGI(+)", "M", merged.sig_plus),
                 ("I(-)", "K", merged.I_minus), ("SIGI(-)", "M", merged.sig_minus),
                 ("N(+)", "I", merged.n_plus), ("N(-)", "I", merged.n_minus)]
    for label, typ, _ in cols:
        mtz.add_column(label, typ)
    data = np.empty((len(merged), 3 + len(cols)), dtype=np.float32)
    data[:, :3] = merged.hkl
    for i, (_, _, v) in enumerate(cols):
        data[:, 3 + i] = np.asarray(v, dtype=np.float64)
    mtz.set_data(data)
    mtz.sort()
    mtz.history = ["From jfx (JAX Jungfraujoch processing): inverse-variance weighted merge"]
    return _write(path, bytes(mtz.write_to_bytes()), outputs)


def _cif_num(v: np.ndarray, fmt: str) -> list[str]:
    return [format(x, fmt) if np.isfinite(x) else "?" for x in np.asarray(v, np.float64)]


def write_cif(path: str | os.PathLike, merged: MergedReflections,
              block_name: str = "jfx", *, outputs: OutputSet | None = None) -> Path:
    """Write ``merged`` as an mmCIF reflection file (items: module docstring)."""
    path = Path(path)
    sg = _sg(merged)
    doc = gemmi.cif.Document()
    block = doc.add_new_block(block_name)
    block.set_pair("_entry.id", gemmi.cif.quote(block_name))
    for name, v in zip(("length_a", "length_b", "length_c", "angle_alpha", "angle_beta",
                        "angle_gamma"), merged.cell):
        block.set_pair(f"_cell.{name}", format(float(v), ".4f"))
    block.set_pair("_symmetry.space_group_name_H-M", gemmi.cif.quote(sg.hm))
    block.set_pair("_symmetry.Int_Tables_number", str(sg.number))
    tags = ["index_h", "index_k", "index_l", "intensity_meas", "intensity_sigma"]
    columns = [[str(int(x)) for x in merged.hkl[:, 0]], [str(int(x)) for x in merged.hkl[:, 1]],
               [str(int(x)) for x in merged.hkl[:, 2]], _cif_num(merged.I, ".4f"),
               _cif_num(merged.sigma, ".4f")]
    if merged.anomalous:
        tags += ["pdbx_I_plus", "pdbx_I_plus_sigma", "pdbx_I_minus", "pdbx_I_minus_sigma"]
        columns += [_cif_num(merged.I_plus, ".4f"), _cif_num(merged.sig_plus, ".4f"),
                    _cif_num(merged.I_minus, ".4f"), _cif_num(merged.sig_minus, ".4f")]
    loop = block.init_loop("_refln.", tags)
    for row in zip(*columns):
        loop.add_row(list(row))
    return _write(path, doc.as_string(), outputs)


def write_hkl(path: str | os.PathLike, merged: MergedReflections, *,
              outputs: OutputSet | None = None) -> Path:
    """Write ``merged`` as plain text: ``#`` header, then ``h k l I sigma n`` rows."""
    path = Path(path)
    sg = _sg(merged)
    c = merged.cell
    lines = ["# jfx merged intensities",
             "# cell " + " ".join(format(float(x), ".4f") for x in c),
             f"# space_group {sg.number} {sg.hm}",
             f"# anomalous {'yes' if merged.anomalous else 'no'}"]
    if merged.anomalous:
        lines.append("# I(+) rows carry h k l, I(-) rows -h -k -l; centric reflections once")
        acen = ~merged.centric
        hkl = np.concatenate([merged.hkl, -merged.hkl[acen]])
        inten = np.concatenate([merged.I_plus, merged.I_minus[acen]])
        sig = np.concatenate([merged.sig_plus, merged.sig_minus[acen]])
        n = np.concatenate([merged.n_plus, merged.n_minus[acen]])
        keep = n > 0
        # centric rows hold the full mean (I(+) = I(-) = IMEAN there)
        hkl, inten, sig, n = hkl[keep], inten[keep], sig[keep], n[keep]
    else:
        hkl, inten, sig, n = merged.hkl, merged.I, merged.sigma, merged.n_obs
    lines.append("# columns: h k l I sigma n")
    body = [f"{h:4d} {k:4d} {l:4d} {i:14.4f} {s:12.4f} {m:5d}"
            for (h, k, l), i, s, m in zip(hkl.tolist(), np.asarray(inten, float).tolist(),
                                          np.asarray(sig, float).tolist(),
                                          np.asarray(n, np.int64).tolist())]
    return _write(path, "\n".join(lines + body) + "\n", outputs)


def write_merged(prefix: str | os.PathLike, merged: MergedReflections, fmt: str = "mtz",
                 *, outputs: OutputSet | None = None, **kwargs) -> Path:
    """Write ``<prefix>.mtz`` / ``<prefix>.cif`` / ``<prefix>.hkl`` for ``fmt`` mtz|cif|txt
    (into ``outputs`` when given)."""
    if fmt not in MERGED_EXTENSIONS:
        raise InputError(f"unknown reflection output format {fmt!r} (mtz, cif or txt)")
    path = Path(str(prefix) + MERGED_EXTENSIONS[fmt])
    if fmt == "mtz":
        return write_mtz(path, merged, outputs=outputs, **kwargs)
    if fmt == "cif":
        return write_cif(path, merged, outputs=outputs, **kwargs)
    return write_hkl(path, merged, outputs=outputs)


def write_scale_dat(path: str | os.PathLike, image: np.ndarray, scale: np.ndarray,
                    bfactor: np.ndarray, cc: np.ndarray, rejected: np.ndarray, *,
                    outputs: OutputSet | None = None) -> Path:
    """Write ``<prefix>_iterN_scale.dat``: one line per image ``image scale bfactor cc rejected``.

    Args:
        image: (k,) int image numbers; scale: (k,) per-image scale G; bfactor: (k,) B (Å²);
        cc: (k,) image-vs-merged correlation (NaN printed as ``nan``); rejected: (k,) bool/0-1.
    """
    path = Path(path)
    cols = [np.asarray(x).reshape(-1) for x in (image, scale, bfactor, cc, rejected)]
    k = cols[0].shape[0]
    if any(c.shape[0] != k for c in cols):
        raise ValueError("image, scale, bfactor, cc and rejected must have the same length")
    body = [f"{int(i)} {float(s):.6g} {float(b):.4f} {float(c):.4f} {int(bool(r))}"
            for i, s, b, c, r in zip(*(c.tolist() for c in cols))]
    return _write(path, "".join(line + "\n" for line in body), outputs)


def read_reference_mtz(path: str | os.PathLike, space_group: int | str | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Read reference intensities from an MTZ file (``-z/--reference-mtz``).

    Column choice: the first present of ``IMEAN``, ``I``, ``I-obs``, … (intensity labels), then
    any column of type J; otherwise amplitudes squared: ``FP``, ``F``, ``FOBS``, ``F-obs``,
    ``F-model``, ``FC``, … then any column of type F.  Rows with a missing value are dropped.

    Args:
        path: MTZ file.
        space_group: overrides the file's space group (IT number or symbol).

    Returns:
        ``(hkl (m, 3) int32, I (m,) float64, cell (6,) float64, space_group IT number)``.

    Raises:
        InputError: missing/unreadable file, no usable intensity or amplitude column, no space
            group (one-line message).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"reference MTZ {str(p)!r} does not exist")
    try:
        mtz = gemmi.read_mtz_file(str(p))
    except (RuntimeError, ValueError, OSError) as e:  # gemmi: RuntimeError for non-MTZ input
        raise InputError(f"cannot read reference MTZ {str(p)!r}: {one_line(e)}") from None
    labels = {c.label: c for c in mtz.columns}
    col, square = None, False
    for lab in _I_LABELS:
        if lab in labels and labels[lab].type == "J":
            col = labels[lab]
            break
    if col is None:
        js = [c for c in mtz.columns if c.type == "J"]
        col = js[0] if js else None
    if col is None:
        for lab in _F_LABELS:
            if lab in labels and labels[lab].type == "F":
                col, square = labels[lab], True
                break
    if col is None:
        fs = [c for c in mtz.columns if c.type == "F"]
        if fs:
            col, square = fs[0], True
    if col is None:
        raise InputError(f"reference MTZ {str(p)!r} has no intensity (J) or amplitude (F) column "
                         f"(columns: {' '.join(labels)})")
    if space_group is not None:
        try:
            sg = groups.space_group(space_group)
        except ValueError as e:
            raise InputError(one_line(e)) from None
    else:
        sg = mtz.spacegroup
        if sg is None:
            raise InputError(f"reference MTZ {str(p)!r} has no space group; give one (-S)")
    hkl = np.asarray(mtz.make_miller_array(), dtype=np.int32)
    v = np.asarray(col.array, dtype=np.float64)
    ok = np.isfinite(v)
    hkl, v = hkl[ok], v[ok]
    if square:
        v = v * v
    if v.size == 0:
        raise InputError(f"reference MTZ {str(p)!r}: column {col.label} has no values")
    c = mtz.cell
    cell = np.array([c.a, c.b, c.c, c.alpha, c.beta, c.gamma], dtype=np.float64)
    return hkl, v, cell, int(sg.number)

"""A run split into parts and put back together (pure; the launcher that runs the parts is
:mod:`jfx.launcher.multirun`).

:func:`plan_parts` splits the selected images into contiguous parts; a rotation part also
reads ``margin`` images beyond its own on either side. :func:`crop_state` keeps a part's own
images of a state processed over that wider range: per-image results of its own images, and
the reflections whose centre image is one of them — integrated whole, from every partial, so
a reflection crossing a part boundary appears once, as in a single run (as long as it spans
less than the margin). :func:`combine_states` concatenates the parts' states into one state
of all images, the one a single run would hand to the crystal and scaling stages.

What cannot be one number per run is recorded as follows: the geometry (stills: the pooled
detector; rotation: the refined sweep model) is the first part's; a rotation run's lattice is
the first part's angle-0 basis, and every part's refined lattice becomes one scan-varying
block over its own images (inside a part its own blocks, when it refined scan-varying);
rms deviations are the parts' spot-weighted means, the rocking width the
passage-weighted mean; timings add up (the parts' work, not the wall time).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from jfx.pipeline.state import (
    ImageSelection,
    IndexingTable,
    ProcessState,
    RefinementTable,
    RockingWidth,
)


@dataclasses.dataclass(frozen=True)
class Part:
    """One part of a split run.

    Attributes:
        number: 0-based part number.
        own: (k,) int64 image numbers the part answers for (contiguous in the selection).
        read: (k',) int64 image numbers it processes: ``own`` and, for a rotation sweep,
            up to ``margin`` selected images on either side.
    """

    number: int
    own: np.ndarray
    read: np.ndarray

    @property
    def label(self) -> str:
        """``images a-b`` (``image a`` for one)."""
        a, b = int(self.own[0]), int(self.own[-1])
        return f"image {a}" if a == b else f"images {a}-{b}"


def plan_parts(indices: np.ndarray, n_parts: int, margin: int = 0) -> list[Part]:
    """Split the selected image numbers ``indices`` (n,) into ``n_parts`` contiguous parts of
    (nearly) equal size, each reading ``margin`` ≥ 0 more selected images on either side.

    Raises:
        ValueError: fewer images than parts, or ``n_parts`` < 1.
    """
    idx = np.asarray(indices, np.int64)
    if n_parts < 1:
        raise ValueError(f"launcher.parts must be >= 1, got {n_parts}")
    if n_parts > len(idx):
        raise ValueError(f"launcher.parts={n_parts} is more than the {len(idx)} selected "
                         "images")
    edges = np.linspace(0, len(idx), n_parts + 1).round().astype(np.int64)
    m = max(0, int(margin))
    return [Part(k, idx[a:b], idx[max(0, a - m):min(len(idx), b + m)])
            for k, (a, b) in enumerate(itertools.pairwise(edges))]


def _take_rows(obj: Any, rows: np.ndarray, shared: Sequence[str] = ()) -> Any:
    """A dataclass with every array field except ``shared`` restricted to ``rows`` of its
    leading axis (None fields stay None)."""
    if obj is None:
        return None
    out = {}
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        if f.name in shared or v is None or not hasattr(v, "shape") or np.ndim(v) == 0:
            continue
        out[f.name] = np.asarray(v)[rows]
    return dataclasses.replace(obj, **out)


def _cat(objs: Sequence[Any], shared: Sequence[str] = ()) -> Any:
    """Concatenate the array fields (all but ``shared``) of same-typed dataclasses along
    their leading axis; the other fields are the first's. None when every one is None."""
    have = [o for o in objs if o is not None]
    if not have:
        return None
    if len(have) != len(objs):
        raise ValueError(f"{type(have[0]).__name__} missing from some parts")

    def rows(o: Any) -> int:  # the leading length of an object's per-row arrays
        return next(len(v) for g in dataclasses.fields(o)
                    if g.name not in shared and hasattr(v := getattr(o, g.name), "shape")
                    and np.ndim(v) > 0)

    out = {}
    for f in dataclasses.fields(have[0]):
        vals = [getattr(o, f.name) for o in have]
        if f.name in shared or all(v is None for v in vals):
            continue
        if any(v is None for v in vals):  # e.g. no unreadable image in a part: none flagged
            like = next(np.asarray(v) for v in vals if v is not None)
            vals = [np.zeros((rows(o),) + like.shape[1:], like.dtype) if v is None else v
                    for o, v in zip(have, vals)]
        if hasattr(vals[0], "shape") and np.ndim(vals[0]) > 0:
            out[f.name] = np.concatenate([np.asarray(v) for v in vals])
        elif isinstance(vals[0], tuple) and f.name in ("bravais",):
            out[f.name] = tuple(x for v in vals for x in v)
    return dataclasses.replace(have[0], **out)


def crop_state(state: ProcessState, own: np.ndarray) -> ProcessState:
    """The state of the images ``own`` (image numbers, a contiguous run of the state's
    selection): per-image results of those images, the joined spots and reflections centred
    on them (a rotation part processed with a margin)."""
    idx = np.asarray(state.selection.indices, np.int64)
    own = np.asarray(own, np.int64)
    keep = np.flatnonzero(np.isin(idx, own))
    if keep.size == len(idx):
        return state
    lo, hi = int(own.min()), int(own.max())
    rep: dict[str, Any] = {"selection": ImageSelection(idx[keep], state.selection.warnings)}
    for name in ("image_stats", "spots", "spot_stats"):
        rep[name] = _take_rows(getattr(state, name), keep)
    if state.azint is not None:
        rep["azint"] = _take_rows(state.azint, keep, ("bin_to_q", "bin_to_azimuth_deg"))
    s3 = state.spots3d
    if s3 is not None:
        f = np.floor(np.asarray(s3.frame, np.float64))
        rep["spots3d"] = _take_rows(s3, np.flatnonzero((f >= lo) & (f <= hi)))
    ix = state.indexing
    if ix is not None:
        rep["indexing"] = _take_rows(ix, keep, ("basis0",))
        rep["indexing"] = dataclasses.replace(rep["indexing"], bravais=tuple(
            ix.bravais[int(k)] for k in keep))
    r = state.refinement
    if (r is not None and r.mode != "rotation") or state.pixel_refinement is not None:
        raise ValueError("only a rotation sweep's parts read beyond their own images")
    if r is not None:
        rep["refinement"] = dataclasses.replace(r, images=np.arange(keep.size),
                                                **_own_blocks(r, lo, hi))
    t = state.reflections
    if t is not None:
        rep["reflections"] = t.take(np.isin(np.asarray(t.image), own))
    return dataclasses.replace(state, **rep)


def _own_blocks(r: RefinementTable, lo: int, hi: int) -> dict[str, Any]:
    """A rotation refinement's scan-varying blocks clipped to the images ``lo..hi``."""
    if r.scan_varying_basis is None:
        return {}
    e = np.asarray(r.scan_varying_edges, np.float64)
    keep = [b for b in range(len(e) - 1) if e[b + 1] > lo and e[b] <= hi]
    if not keep:
        return {"scan_varying_edges": None, "scan_varying_basis": None}
    edges = np.concatenate([[max(e[keep[0]], lo)], np.minimum(e[[b + 1 for b in keep]],
                                                              hi + 1)])
    return {"scan_varying_edges": edges,
            "scan_varying_basis": np.asarray(r.scan_varying_basis)[keep]}


def _weighted(values: Sequence[float | None], weights: Sequence[float]) -> float | None:
    v = np.array([np.nan if x is None else float(x) for x in values])
    w = np.asarray(weights, np.float64)
    ok = np.isfinite(v) & (w > 0)
    if not ok.any():
        ok = np.isfinite(v)
        w = np.ones_like(v)
    return float(np.sum(v[ok] * w[ok]) / np.sum(w[ok])) if ok.any() else None


def _combine_indexing(tables: Sequence[IndexingTable | None],
                      first_pass: IndexingTable | None) -> IndexingTable | None:
    ix = _cat(tables, ("basis0", "geometry"))
    if ix is None:
        return None
    n_att = sum(int(t.n_attempted) for t in tables)
    mode = ix.mode
    if first_pass is not None:  # rotation: the lattice of the driver's first pass
        mode = first_pass.mode
        fb = [b for b, ok in zip(first_pass.bravais, first_pass.indexed) if ok and b]
        bravais = tuple(fb[0] if ok and fb and not b else b
                        for b, ok in zip(ix.bravais, ix.indexed))
        ix = dataclasses.replace(ix, basis0=first_pass.basis0, geometry=first_pass.geometry,
                                 algorithm=first_pass.algorithm, bravais=bravais)
    return dataclasses.replace(ix, n_attempted=n_att, mode=mode)


def _combine_refinement(tables: Sequence[RefinementTable | None],
                        parts: Sequence[ProcessState]) -> RefinementTable | None:
    have = [(t, p) for t, p in zip(tables, parts) if t is not None]
    if not have:
        return None
    first = have[0][0]
    if first.mode == "rotation":
        edges: list[float] = []
        bases = []
        for t, p in have:
            own = np.asarray(p.selection.indices)
            if t.scan_varying_basis is not None:
                e = np.asarray(t.scan_varying_edges, np.float64)
                b = np.asarray(t.scan_varying_basis)
            else:
                e = np.array([own.min(), own.max() + 1], np.float64)
                b = np.asarray(t.basis, np.float64).reshape(1, 3, 3)
            if edges:  # contiguous blocks: each part starts where the previous one ended
                e = e.copy()
                e[0] = edges[-1]
                edges.extend(e[1:].tolist())
            else:
                edges.extend(e.tolist())
            bases.append(b)
        w = [float(t.n_spots or 0) for t, _ in have]
        all_rmsd = [t.rmsd_all for t, _ in have]
        rmsd_all = None if any(a is None for a in all_rmsd) else (
            _weighted([a[0] for a in all_rmsd], w), _weighted([a[1] for a in all_rmsd], w))
        n = sum(p.n_images for p in parts)
        return dataclasses.replace(
            first, images=np.arange(n), status=np.asarray([int(max(np.max(t.status)
                                                                   for t, _ in have))]),
            rmsd_px=_weighted([t.rmsd_px for t, _ in have], w),
            rmsd_phi_deg=_weighted([t.rmsd_phi_deg for t, _ in have], w),
            refined=int(all(t.refined for t, _ in have)),
            scan_varying_edges=np.asarray(edges, np.float64),
            scan_varying_basis=np.concatenate(bases),
            n_spots=int(sum(w)) if any(t.n_spots is not None for t, _ in have) else None,
            n_outliers=sum(int(t.n_outliers) for t, _ in have), rmsd_all=rmsd_all)
    return _cat_positions([t for t, _ in have], [p for _, p in have], parts,
                          extra={"rmsd_px": _weighted([t.rmsd_px for t, _ in have],
                                                      [t.refined for t, _ in have]),
                                 "refined": sum(int(t.refined) for t, _ in have)})


def _offsets(parts: Sequence[ProcessState]) -> dict[int, int]:
    out, n = {}, 0
    for p in parts:
        out[id(p)] = n
        n += p.n_images
    return out


def _cat_positions(tables: Sequence[Any], owners: Sequence[ProcessState],
                   parts: Sequence[ProcessState], extra: dict[str, Any]) -> Any:
    """Concatenate per-image tables indexed by ``images`` (positions into each part's
    selection), the positions shifted to the combined selection."""
    import jax

    off = _offsets(parts)
    first = tables[0]
    rep: dict[str, Any] = {"images": np.concatenate([np.asarray(t.images, np.int64)
                                                     + off[id(p)]
                                                     for t, p in zip(tables, owners)])}
    m = len(first.images)
    for f in dataclasses.fields(first):
        v = getattr(first, f.name)
        if f.name == "images" or v is None or f.name in extra:
            continue
        if f.name in ("values", "sigmas", "params"):
            rep[f.name] = {k: np.concatenate([np.asarray(getattr(t_, f.name)[k])
                                              for t_ in tables]) for k in v}
        elif f.name == "image_geometry":
            rep[f.name] = jax.tree_util.tree_map(
                lambda *a: np.concatenate([np.asarray(x) for x in a]),
                *[t.image_geometry for t in tables])
        elif hasattr(v, "shape") and np.ndim(v) > 0 and len(v) == m:
            rep[f.name] = np.concatenate([np.asarray(getattr(t, f.name)) for t in tables])
    rep.update(extra)
    return dataclasses.replace(first, **rep)


def combine_states(parts: Sequence[ProcessState],
                   first_pass: IndexingTable | None = None) -> ProcessState:
    """One state of all images from the parts' states (in image order, each cropped to its
    own images), before the crystal and scaling stages.

    Args:
        parts: the parts' final states (no scaling).
        first_pass: rotation: the indexing of the driver's first pass (its lattice, mode and
            attempted images are the run's).
    """
    from jfx.models.reflections import Reflections

    parts = sorted(parts, key=lambda p: int(np.asarray(p.selection.indices)[0]))
    first = parts[0]
    warnings: list[str] = []
    for p in parts:
        warnings.extend(w for w in p.warnings if w not in warnings)
    sel = ImageSelection(np.concatenate([np.asarray(p.selection.indices, np.int64)
                                         for p in parts]),
                         tuple(dict.fromkeys(w for p in parts for w in p.selection.warnings)))
    tables = [p.reflections for p in parts if p.reflections is not None]
    widths = [p.rocking_width for p in parts if p.rocking_width is not None]
    rocking = None
    if widths:
        rocking = RockingWidth(_weighted([w.sigma_deg for w in widths],
                                         [w.n_used for w in widths]),
                               widths[0].source, widths[0].window_deg,
                               sum(int(w.n_used) for w in widths))
    pix = [p.pixel_refinement for p in parts]
    pixel = None
    if any(t is not None for t in pix):
        have = [t for t in pix if t is not None]
        pixel = _cat_positions(have, [p for t, p in zip(pix, parts) if t is not None], parts,
                               extra={"n_pilot": sum(t.n_pilot for t in have),
                                      "seconds": sum(t.seconds for t in have),
                                      "seconds_by_part": _sum_maps(
                                          [t.seconds_by_part for t in have])})
    timings = _sum_maps([p.timings_s for p in parts])
    s3 = [p.spots3d for p in parts]
    return ProcessState(
        selection=sel, geometry=first.geometry, stored_space_group=first.stored_space_group,
        image_stats=_cat([p.image_stats for p in parts]),
        spots=_cat([p.spots for p in parts]),
        spot_stats=_cat([p.spot_stats for p in parts]),
        spots3d=_cat(s3) if all(s is not None for s in s3) else None,
        azint=_cat([p.azint for p in parts], ("bin_to_q", "bin_to_azimuth_deg")),
        indexing=_combine_indexing([p.indexing for p in parts], first_pass),
        refinement=_combine_refinement([p.refinement for p in parts], parts),
        reflections=Reflections.concatenate(tables) if tables else None,
        rocking_width=rocking, pixel_refinement=pixel, timings_s=timings,
        warnings=tuple(warnings))


def _sum_maps(maps: Sequence[Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for m in maps:
        for k, v in (m or {}).items():
            out[k] = out.get(k, 0.0) + float(v)
    return out


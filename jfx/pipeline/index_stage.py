"""Indexing stage: the spot lists → lattices, every lattice and Miller index kept.

Stills are indexed per image in batches (:func:`jfx.index.index`); rotation data jointly
(two-pass ``-R[=n]``, single-pass ``--single-pass-rotation``, or ``--force-rotation-lattice``)
with one angle-0 lattice assigned to every image. The joint pass uses the 3D spots
(``state.spots3d``, each at its φ centroid) when the state has them and the spots stored in
the master file are not used; the per-image assignment uses the per-image spot lists. The lattices refer to
``state.final_geometry`` (the stored geometry, or a refined one when the runner retries).

Adds to the state: ``indexing`` (:class:`IndexingTable`).
:func:`run_unconstrained` is the symmetry-free first pass of the rotation geometry rescue
(the runner decides when).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np

from jfx.config import ProcessSettings
from jfx.io.errors import InputError
from jfx.models.geometry import Geometry
from jfx.pipeline.context import RunContext
from jfx.pipeline.state import IndexingTable, ProcessState

INDEX_BATCH = 16
"""Stills indexed per strategy call (the JAX search is vmap-batched over them)."""


@dataclasses.dataclass(frozen=True)
class IndexSummary:
    """Indexing summary (for the console).

    Attributes:
        algorithm: the indexer used; mode: ``stills`` | ``two-pass`` | ``single-pass`` |
            ``forced`` (+ a note when the geometry had to be refined first).
        n_images: images processed; n_attempted: images with enough spots; n_indexed.
        bravais: most common Bravais type of the indexed images (``""``: none).
        cell_median: (6,) median cell (Å, deg) of the indexed images (NaN if none).
        cell_spread: (6,) robust spread (1.4826 · MAD) of the cells.
        rotation_lattice: (9,) angle-0 basis of rotation indexing (None for stills).
    """

    algorithm: str
    mode: str
    n_images: int
    n_attempted: int
    n_indexed: int
    bravais: str
    cell_median: np.ndarray
    cell_spread: np.ndarray
    rotation_lattice: np.ndarray | None = None

    def lines(self) -> list[str]:
        """Console lines."""
        rate = self.n_indexed / self.n_attempted if self.n_attempted else 0.0
        out = [(f"indexing ({self.algorithm}, {self.mode}): {self.n_indexed} of {self.n_images} "
                f"images indexed ({100 * rate:.1f}% of the {self.n_attempted} with enough "
                "spots)")]
        if self.n_indexed:
            c, e = self.cell_median, self.cell_spread
            out.append(f"cell ({self.bravais}): a {c[0]:.2f}({e[0]:.2f}) b {c[1]:.2f}({e[1]:.2f}) "
                       f"c {c[2]:.2f}({e[2]:.2f}) A, alpha {c[3]:.2f}({e[3]:.2f}) "
                       f"beta {c[4]:.2f}({e[4]:.2f}) gamma {c[5]:.2f}({e[5]:.2f}) deg "
                       "(median and robust spread)")
        return out


def summary(state: ProcessState) -> IndexSummary | None:
    """The indexing summary of ``state`` (None when indexing did not run)."""
    from jfx.models.lattice import basis_to_cell

    ix = state.indexing
    if ix is None:
        return None
    ok = ix.indexed
    cells = np.array([basis_to_cell(b) for b in ix.basis[ok, 0]]) if ok.any() \
        else np.full((0, 6), np.nan)
    med = np.median(cells, axis=0) if len(cells) else np.full(6, np.nan)
    spread = (1.4826 * np.median(np.abs(cells - med), axis=0)) if len(cells) \
        else np.full(6, np.nan)
    if ix.basis0 is not None:
        med, spread = basis_to_cell(ix.basis0), np.zeros(6)
    kinds = [b for b, o in zip(ix.bravais, ok) if o and b]
    bravais = max(set(kinds), key=kinds.count) if kinds else ""
    return IndexSummary(algorithm=ix.algorithm, mode=ix.mode, n_images=len(ix.status),
                        n_attempted=ix.n_attempted, n_indexed=ix.n_indexed, bravais=bravais,
                        cell_median=med, cell_spread=spread,
                        rotation_lattice=None if ix.basis0 is None else ix.basis0.reshape(9))


def rotation_mode(settings: ProcessSettings) -> bool:
    """Whether the run asks for rotation indexing."""
    return settings.rotation.requested


def enabled(settings: ProcessSettings) -> bool:
    """Whether indexing runs at all (``-X none`` without a forced rotation lattice: no)."""
    return settings.index.enabled or settings.rotation.force_lattice is not None


def _spot_arrays(state: ProcessState) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sp = state.spots
    x = np.asarray(sp.x_px, np.float64)
    y = np.asarray(sp.y_px, np.float64)
    valid = np.asarray(sp.valid) & np.isfinite(x) & np.isfinite(y)
    return x, y, valid


def _vectors(geom: Geometry, x: np.ndarray, y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    from jfx.physics import rotation as rot

    return rot.spot_vectors(geom, np.where(valid, x, 0.0), np.where(valid, y, 0.0))


def _indexer(settings: ProcessSettings) -> tuple[str, Any]:
    """(name, :class:`~jfx.index.base.Indexer` or None) of the ``-X`` strategy (``auto``
    resolved by the strategy for the known cell and the JAX backend)."""
    import jax

    gpu = jax.default_backend() != "cpu"
    cell = settings.crystal.unit_cell
    try:
        strategy = settings.index.resolve(cell, gpu)
        return strategy.name, strategy.create_indexer(cell, gpu)
    except ValueError as e:
        raise InputError(" ".join(str(e).split())) from None


def _table(results: list[Any], n_spots: int, n_lat: int) -> dict[str, Any]:
    """Stack per-image :class:`IndexResult` s into the table arrays."""
    n = len(results)
    basis = np.full((n, n_lat, 3, 3), np.nan)
    hkl = np.zeros((n, n_spots, 3), np.int32)
    lid = np.full((n, n_spots), -1, np.int32)
    status = np.zeros(n, np.int32)
    bravais = []
    for i, r in enumerate(results):
        status[i] = int(r.status)
        bravais.append(r.bravais if r.indexed else "")
        if not r.indexed:
            continue
        b = np.asarray(r.basis, np.float64)
        basis[i, :b.shape[0]] = b[:n_lat]
        m = min(n_spots, np.asarray(r.lattice_id).shape[0])
        lid[i, :m] = np.asarray(r.lattice_id)[:m]
        hkl[i, :m] = np.asarray(r.hkl)[:m]
    return dict(status=status, basis=basis, hkl=hkl, lattice_id=lid, bravais=tuple(bravais))


def run(state: ProcessState, settings: ProcessSettings, ctx: RunContext, *,
        use_stored_spots: bool = True) -> ProcessState:
    """Index every selected image (stills) or the sweep (rotation).

    ``use_stored_spots``: two-pass rotation pass 1 may use the spots stored in the master
    file (``ctx.stored_spots``) unless ``--redo-rotation-spots``.

    Raises:
        InputError: rotation indexing asked for still data, or ffbidx without a cell.
    """
    from jfx.index.indexing import Symmetry, index
    from jfx.index.rotation import single_pass, two_pass
    from jfx.physics import rotation as rot

    if not enabled(settings):
        return state
    t0 = time.perf_counter()
    cry, rs = settings.crystal, settings.rotation
    alg, indexer = _indexer(settings)
    sym = Symmetry(cry.unit_cell, cry.space_group)
    opt = settings.index  # the strategy settings are the shared IndexOptions
    geom = state.final_geometry
    x, y, valid = _spot_arrays(state)
    n, n_spots = valid.shape
    indices = np.asarray(state.selection.indices)
    basis0 = None
    is_rot = rotation_mode(settings)
    with ctx.bar("indexing", n) as bar:
        if is_rot:
            if not geom.is_rotation:
                raise InputError("rotation indexing (-R / --single-pass-rotation / "
                                 "--force-rotation-lattice) needs rotation data; the input "
                                 "holds stills (no goniometer scan)")
            axis = np.asarray(geom.goniometer.axis, dtype=np.float64)
            phi = rot.image_angles(geom, indices.astype(np.float64) + 0.5)
            n1 = n if rs.two_pass_images is None else min(rs.two_pass_images, n)
            q0 = rot.to_angle_zero(_vectors(geom, x, y, valid), axis, phi[:, None])
            if rs.force_lattice is not None:
                mode, out = "forced", two_pass(
                    q0, valid, axis, phi, 0, None, sym, opt,
                    force_basis0=np.reshape(rs.force_lattice, (3, 3)))
            elif rs.two_pass_images is not None:
                q1 = v1 = None
                if use_stored_spots and ctx.stored_spots is not None and not rs.redo_spots:
                    q1, v1 = _stored_pass1(geom, ctx.stored_spots, indices[:n1], axis)
                elif state.spots3d is not None and state.spots3d.n:
                    q3, pos3 = _spots3d_pass1(geom, state.spots3d, indices, axis)
                    q1, v1 = q3[None], (pos3 < n1)[None]
                mode, out = "two-pass", two_pass(q0, valid, axis, phi, n1, indexer, sym,
                                                     opt, q0_first=q1, valid_first=v1)
            else:
                first = None
                if state.spots3d is not None and state.spots3d.n:
                    first = _spots3d_pass1(geom, state.spots3d, indices, axis)
                mode, out = "single-pass", single_pass(q0, valid, axis, phi,
                                                           rs.single_pass_deg, indexer, sym,
                                                           opt, first=first)
            results, basis0 = out.images, out.basis0
            if hasattr(bar, "update"):
                bar.update(n)
        else:
            mode, results = "stills", []
            q = _vectors(geom, x, y, valid)
            # full batches of stills that can index (the search compiles per batch size),
            # then the rest (too few spots: no search) in one call; results in image order
            can = np.asarray(valid).sum(axis=1) >= opt.min_spots
            order = np.concatenate([np.flatnonzero(can), np.flatnonzero(~can)])
            n_can = int(can.sum())
            cuts = [*range(0, n_can, INDEX_BATCH), n_can, n]
            res_o: list = []
            for a, b in zip(cuts[:-1], cuts[1:]):
                b = min(b, a + INDEX_BATCH) if a < n_can else b
                if b <= a:
                    continue
                rows = order[a:b]
                res_o += index(q[rows], valid[rows], indexer, symmetry=sym, options=opt)
                if hasattr(bar, "update"):
                    bar.update(b - a)
            results = [None] * n
            for i, r in zip(order, res_o):
                results[int(i)] = r
    attempted = int(np.sum(valid.sum(axis=1) >= (3 if is_rot else opt.min_spots)))
    table = IndexingTable(algorithm=alg, mode=mode, n_attempted=attempted, geometry=geom,
                          basis0=None if basis0 is None else np.asarray(basis0, np.float64),
                          **_table(results, n_spots, opt.max_lattices))
    return dataclasses.replace(state, indexing=table).with_time("index",
                                                                time.perf_counter() - t0)


def can_rescue_rotation(state: ProcessState, settings: ProcessSettings,
                        ctx: RunContext) -> bool:
    """Whether the rotation geometry rescue applies: rotation indexing found no lattice,
    a search strategy exists, the first pass did not come from stored spots, refinement
    is on."""
    ix, rs = state.indexing, settings.rotation
    if ix is None or ix.mode not in ("two-pass", "single-pass") or ix.basis0 is not None:
        return False
    used_stored = (rs.two_pass_images is not None and ctx.stored_spots is not None
                   and not rs.redo_spots)
    return not used_stored and settings.index.enabled and settings.refine.enabled


def run_unconstrained(state: ProcessState, settings: ProcessSettings,
                      ctx: RunContext) -> ProcessState:
    """Symmetry-free joint indexing of the first-pass rotation spots (loose viability:
    25 % indexed, rms 0.2): a lattice a wrong stored geometry still admits, for refining
    the geometry before indexing again. The table's mode is ``unconstrained``; its
    ``basis0`` is None when even this fails."""
    from jfx.index.common import index_error
    from jfx.index.indexing import Symmetry, index
    from jfx.physics import rotation as rot

    _, indexer = _indexer(settings)
    geom = state.final_geometry
    x, y, valid = _spot_arrays(state)
    n, n_spots = valid.shape
    rs = settings.rotation
    n1 = n if rs.two_pass_images is None else min(rs.two_pass_images, n)
    indices = np.asarray(state.selection.indices)
    axis = np.asarray(geom.goniometer.axis, dtype=np.float64)
    phi = rot.image_angles(geom, indices.astype(np.float64) + 0.5)
    q0 = rot.to_angle_zero(_vectors(geom, x[:n1], y[:n1], valid[:n1]), axis, phi[:n1, None])
    opt = dataclasses.replace(settings.index, min_fraction=0.25, max_rms=0.2)
    qf = q0[valid[:n1]]
    res = index(qf[None], np.ones((1, len(qf)), bool), indexer, symmetry=Symmetry(),
                options=opt)[0]
    status = np.full(n, 3, np.int32)  # NOT_VIABLE
    basis = np.full((n, 1, 3, 3), np.nan)
    hkl = np.zeros((n, n_spots, 3), np.int32)
    lid = np.full((n, n_spots), -1, np.int32)
    b0 = None
    if res.indexed:
        b0 = np.asarray(res.basis[0], np.float64)
        h, d = index_error(b0, q0.reshape(-1, 3))
        inl = valid[:n1] & (d.reshape(n1, n_spots) < opt.tolerance)
        hkl[:n1] = h.reshape(n1, n_spots, 3)
        lid[:n1] = np.where(inl, 0, -1)
        status[:n1] = np.where(inl.any(axis=1), 0, 3)
    table = IndexingTable(algorithm="unconstrained", mode="unconstrained", status=status,
                          basis=basis, hkl=hkl, lattice_id=lid, bravais=("",) * n,
                          n_attempted=n1, geometry=geom, basis0=b0)
    return dataclasses.replace(state, indexing=table)


def _spots3d_pass1(geometry: Geometry, spots3d: Any, indices: np.ndarray,
                   axis: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(angle-0 vectors (m, 3) of the 3D spots at their φ centroid, position (m,) int64 in
    the selection of the image holding each centroid) for the joint indexing pass."""
    from jfx.physics import rotation as rot

    x = np.asarray(spots3d.x_px, np.float64)
    y = np.asarray(spots3d.y_px, np.float64)
    z = np.asarray(spots3d.frame, np.float64)
    q = rot.to_angle_zero(rot.spot_vectors(geometry, x, y), axis, rot.image_angles(geometry, z))
    pos = np.searchsorted(np.asarray(indices, np.int64), np.floor(z).astype(np.int64))
    return q, pos


def _stored_pass1(geometry: Geometry, stored: Any, images: np.ndarray, axis: np.ndarray):
    """Angle-0 spot vectors of the spots stored in the master for ``images`` (pass 1)."""
    from jfx.physics import rotation as rot

    images = np.asarray(images, dtype=np.int64)
    images = images[images < len(stored.n_peaks)]
    if images.size == 0:
        return None, None
    x = np.asarray(stored.x_px, dtype=np.float64)[images]
    y = np.asarray(stored.y_px, dtype=np.float64)[images]
    valid = np.arange(x.shape[1])[None, :] < np.asarray(stored.n_peaks)[images][:, None]
    valid &= np.isfinite(x) & np.isfinite(y)
    q = rot.spot_vectors(geometry, np.where(valid, x, 0.0), np.where(valid, y, 0.0))
    phi = rot.image_angles(geometry, images.astype(np.float64) + 0.5)
    return rot.to_angle_zero(q, axis, phi[:, None]), valid

"""Rotation-data indexing (two-pass and single-pass).

Frames (:mod:`jfx.physics.rotation`, which also turns detector positions into spot vectors):
a spot at pixel (x, y) of image i has the lab-frame scattering vector q = s1 − s0 (Å⁻¹) at the
goniometer angle φ of that spot; for rotation data φ is the angle at the spot's frame
coordinate (image number + 0.5 for a spot seen in one image), and q₀ = R(φ)ᵀ q is the same
vector at angle 0 — the frame of the angle-0 lattice (rows a, b, c, Å). The lattice at angle
φ is ``basis0 @ R(φ)ᵀ`` (:mod:`jfx.models.lattice`).

* **Two-pass** (``-R[=N]``): pass 1 indexes the q₀ of the spots of the first N images jointly
  (one 3-D problem, any indexer), pass 2 assigns every image's spots with that lattice.
* **Single-pass** (``--single-pass-rotation[=deg]``): images arrive in order; indexing is
  attempted once the spots cover the minimum angular range, and again every further degree
  until it succeeds; then every image (earlier ones included) is assigned with that lattice.
* **Forced lattice** (``--force-rotation-lattice``): the angle-0 basis is given; only pass 2.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jfx.index.base import Indexer, IndexResult, IndexStatus
from jfx.index.common import index_error
from jfx.index.indexing import IndexOptions, Symmetry, index
from jfx.physics.rotation import lattice_at


@dataclasses.dataclass(frozen=True)
class RotationIndexing:
    """Result of rotation indexing.

    Attributes:
        basis0: (3, 3) angle-0 basis (rows a, b, c, Å, lab frame) or None if not indexed.
        status: :class:`IndexStatus` of the joint indexing.
        bravais: Bravais symbol of the lattice (``""`` if none).
        images: per-image results (``basis`` = lattice at that image's centre angle).
        n_images_pass1: images whose spots entered the joint indexing.
        angle_range_deg: angular range of those spots.
    """

    basis0: np.ndarray | None
    status: IndexStatus
    bravais: str
    images: list[IndexResult]
    n_images_pass1: int
    angle_range_deg: float


def assign_images(basis0: np.ndarray, q0: np.ndarray, valid: np.ndarray, axis: np.ndarray,
                  phi_centre: np.ndarray, options: IndexOptions, bravais: str = ""
                  ) -> list[IndexResult]:
    """Pass 2: index every image's spots with the angle-0 lattice.

    An image counts as indexed when the lattice indexes at least 3 of its spots and at least
    ``options.min_fraction`` of them (rotation frames can hold few spots each).

    Args:
        basis0: (3, 3) angle-0 basis.
        q0: (n_img, n, 3) angle-0 spot vectors.
        valid: (n_img, n) bool.
        axis: (3,) goniometer axis.
        phi_centre: (n_img,) angle of each image's centre (rad), for the per-image basis.
        options: tolerance and viability.
        bravais: symbol copied into the results.
    """
    out = []
    for i in range(q0.shape[0]):
        v = valid[i] & np.all(np.isfinite(q0[i]), axis=1)
        qi = np.where(v[:, None], q0[i], 0.0)
        hkl, d = index_error(basis0, qi)
        inl = v & (d < options.tolerance)
        k = int(inl.sum())
        n = int(v.sum())
        ok = n > 0 and k >= 3 and k >= options.min_fraction * n
        res = IndexResult.empty(q0.shape[1], options.max_lattices,
                                IndexStatus.OK if ok else (IndexStatus.TOO_FEW_SPOTS if n < 3
                                                           else IndexStatus.NOT_VIABLE))
        basis = np.array(res.basis)
        n_idx = np.array(res.n_indexed)
        resid = np.array(res.residual)
        lat = np.array(res.lattice_id)
        hk = np.array(res.hkl)
        if ok:
            basis[0] = lattice_at(basis0, axis, float(phi_centre[i]))
            n_idx[0] = k
            resid[0] = float(np.sqrt(np.mean(d[inl] ** 2)))
            lat[inl] = 0
            hk[inl] = hkl[inl]
        out.append(dataclasses.replace(res, basis=basis, n_indexed=n_idx, residual=resid,
                                       lattice_id=lat, hkl=hk, bravais=bravais if ok else ""))
    return out


def _joint(q0: np.ndarray, valid: np.ndarray, indexer: Indexer, symmetry: Symmetry,
           options: IndexOptions) -> IndexResult:
    """Index the flattened angle-0 vectors of several images as one 3-D problem."""
    qf = q0.reshape(-1, 3)
    vf = valid.reshape(-1) & np.all(np.isfinite(qf), axis=1)
    qf = qf[vf]
    one = dataclasses.replace(options, max_lattices=1)
    return index(qf[None], np.ones((1, len(qf)), bool), indexer, symmetry=symmetry,
                 options=one)[0]


def two_pass(q0: np.ndarray, valid: np.ndarray, axis: np.ndarray, phi_centre: np.ndarray, n_first: int, indexer: Indexer | None,
             symmetry: Symmetry, options: IndexOptions,
             force_basis0: np.ndarray | None = None,
             q0_first: np.ndarray | None = None, valid_first: np.ndarray | None = None
             ) -> RotationIndexing:
    """Two-pass rotation indexing (``-R[=n_first]``) or a forced angle-0 lattice.

    Args:
        q0: (n_img, n, 3) angle-0 spot vectors of all images (pass 2).
        valid: (n_img, n) bool.
        axis: (3,) goniometer axis.
        phi_centre: (n_img,) angle of each image's centre (rad).
        n_first: images used in pass 1 (the first ones).
        indexer: the candidate strategy (ignored with ``force_basis0``).
        symmetry: known cell / space group.
        options: :class:`IndexOptions`.
        force_basis0: (3, 3) angle-0 basis that skips pass 1.
        q0_first, valid_first: spot vectors for pass 1 (e.g. from the spots stored in the
            master file); default: the first ``n_first`` images of ``q0``.
    """
    n_img = q0.shape[0]
    n1 = min(int(n_first), n_img)
    if q0_first is None:
        q0_first, valid_first = q0[:n1], valid[:n1]
    rng = float(np.degrees(abs(phi_centre[min(n1, n_img) - 1] - phi_centre[0]))) if n_img else 0.0
    if force_basis0 is not None:
        b0 = np.asarray(force_basis0, dtype=np.float64).reshape(3, 3)
        return RotationIndexing(b0, IndexStatus.OK, "",
                                assign_images(b0, q0, valid, axis, phi_centre, options),
                                0, 0.0)
    res = _joint(q0_first, valid_first, indexer, symmetry, options)
    if not res.indexed:
        empty = [IndexResult.empty(q0.shape[1], options.max_lattices, IndexStatus(int(res.status)))
                 for _ in range(n_img)]
        return RotationIndexing(None, IndexStatus(int(res.status)), "", empty, n1, rng)
    b0 = np.asarray(res.basis[0])
    return RotationIndexing(b0, IndexStatus.OK, res.bravais,
                            assign_images(b0, q0, valid, axis, phi_centre, options,
                                          res.bravais), n1, rng)


def single_pass(q0: np.ndarray, valid: np.ndarray, axis: np.ndarray, phi_centre: np.ndarray,
                min_range_deg: float, indexer: Indexer, symmetry: Symmetry,
                options: IndexOptions, retry_deg: float = 1.0,
                first: tuple[np.ndarray, np.ndarray] | None = None) -> RotationIndexing:
    """Online-like single-pass rotation indexing (``--single-pass-rotation[=deg]``).

    Images are taken in order; once the accumulated images span ``min_range_deg`` the joint
    indexing is tried, and again after every further ``retry_deg`` until it succeeds.

    ``first``: optional (angle-0 vectors (m, 3), image position (m,) int) used for the joint
    indexing instead of ``q0`` (e.g. 3D spots at their φ centroids): at image position i the
    rows with position ≤ i enter.
    """
    n_img = q0.shape[0]
    last_try = None
    for i in range(n_img):
        span = float(np.degrees(abs(phi_centre[i] - phi_centre[0])))
        if span + 1e-9 < min_range_deg:
            continue
        if last_try is not None and span - last_try < retry_deg - 1e-9:
            continue
        last_try = span
        if first is None:
            res = _joint(q0[: i + 1], valid[: i + 1], indexer, symmetry, options)
        else:
            use = np.asarray(first[1]) <= i
            res = _joint(np.asarray(first[0])[use][None], np.ones((1, int(use.sum())), bool),
                         indexer, symmetry, options)
        if res.indexed:
            b0 = np.asarray(res.basis[0])
            return RotationIndexing(b0, IndexStatus.OK, res.bravais,
                                    assign_images(b0, q0, valid, axis, phi_centre, options,
                                                  res.bravais), i + 1, span)
    status = IndexStatus.NOT_VIABLE if last_try is not None else IndexStatus.TOO_FEW_SPOTS
    empty = [IndexResult.empty(q0.shape[1], options.max_lattices, status) for _ in range(n_img)]
    span = float(np.degrees(abs(phi_centre[-1] - phi_centre[0]))) if n_img else 0.0
    return RotationIndexing(None, status, "", empty, n_img, span)

"""Build the indexer strategy for an algorithm name (``-X``) and the known crystal, and the
plain-array indexing API on top of it (:func:`index_vectors`)."""

from __future__ import annotations

import dataclasses

import numpy as np

from jfx.index.base import Indexer, IndexResult
from jfx.index.indexing import IndexOptions, Symmetry, index
from jfx.index.settings import IndexSettings


def make_indexer(algorithm: str, unit_cell=None, settings: IndexSettings | None = None,
                 gpu: bool | None = None) -> Indexer | None:
    """The :class:`~jfx.index.base.Indexer` for ``algorithm``.

    Args:
        algorithm: ``ffbidx`` | ``fft`` | ``fftw`` | ``auto`` | ``none`` (case-insensitive).
        unit_cell: known cell (a, b, c, α, β, γ) or None.
        settings: :class:`IndexSettings` (for the algorithm parameters); default values if
            None.
        gpu: whether JAX runs on a GPU (None: ask JAX) — decides ``auto`` without a cell.

    Returns:
        The strategy, or None for ``none``.

    Raises:
        ValueError: ``ffbidx`` without a unit cell, or an unknown algorithm.
    """
    settings = settings or IndexSettings()
    settings = dataclasses.replace(settings, algorithm=str(algorithm).lower())
    if gpu is None:
        import jax

        gpu = jax.default_backend() != "cpu"
    alg = settings.resolve(unit_cell is not None, gpu)
    if alg == "none":
        return None
    if alg == "ffbidx":
        if unit_cell is None:
            raise ValueError("indexing algorithm ffbidx requires a unit cell "
                             "(-C a,b,c,alpha,beta,gamma)")
        from jfx.index.ffbidx import FFBIndexer

        return FFBIndexer(cell=tuple(float(v) for v in unit_cell), settings=settings.ffbidx)
    from jfx.index.fft import FFTIndexer

    fft = settings.fft
    if alg == "fftw":
        fft = dataclasses.replace(fft, backend="numpy")
    elif alg == "fft":
        fft = dataclasses.replace(fft, backend="jax")
    return FFTIndexer(fft)


def index_vectors(q: np.ndarray, *, unit_cell=None, space_group: int | None = None,
                  algorithm: str = "auto", valid: np.ndarray | None = None,
                  options: IndexOptions | None = None, indexer: Indexer | None = None
                  ) -> IndexResult:
    """Index one set of reciprocal-space vectors — the plain-array API (no files needed).

    Args:
        q: (n, 3) spot vectors (Å⁻¹) in any Cartesian frame; the basis comes back in the same
            frame.
        unit_cell: optional known cell (a, b, c, α, β, γ), Å/deg.
        space_group: optional space-group number.
        algorithm: ``ffbidx`` (needs ``unit_cell``), ``fft`` (JAX), ``fftw`` (numpy) or
            ``auto`` (ffbidx with a cell, else fftw on CPU / fft on GPU).
        valid: optional (n,) bool mask.
        options: :class:`IndexOptions`.
        indexer: a ready strategy object (overrides ``algorithm``).

    Returns:
        :class:`~jfx.index.base.IndexResult`: ``basis[0]`` rows a, b, c (Å), ``hkl`` per spot.

    Example:
        >>> res = index_vectors(q, unit_cell=(79.1, 79.1, 38.0, 90, 90, 90), space_group=96)
        >>> res.basis[0], res.hkl[res.lattice_id == 0]
    """
    q = np.asarray(q, dtype=np.float64)
    if q.ndim != 2 or q.shape[1] != 3:
        raise ValueError(f"q must be (n, 3), got {q.shape}")
    sym = Symmetry(None if unit_cell is None else tuple(float(v) for v in unit_cell),
                   space_group)
    if indexer is None:
        indexer = make_indexer(algorithm, sym.unit_cell)
    v = np.ones(len(q), bool) if valid is None else np.asarray(valid, dtype=bool)
    return index(q[None], v[None], indexer, symmetry=sym, options=options)[0]

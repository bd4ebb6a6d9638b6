"""The plain-array indexing API (:func:`index_vectors`): one set of spot vectors, an indexing
strategy (:class:`jfx.index.settings.IndexSettings`, default ``auto``) and the known crystal."""

from __future__ import annotations

import numpy as np

from jfx.index.base import Indexer, IndexResult
from jfx.index.indexing import IndexOptions, Symmetry, index
from jfx.index.settings import AutoIndexing, IndexSettings


def index_vectors(q: np.ndarray, *, unit_cell=None, space_group: int | None = None,
                  strategy: IndexSettings | None = None, valid: np.ndarray | None = None,
                  options: IndexOptions | None = None, indexer: Indexer | None = None
                  ) -> IndexResult:
    """Index one set of reciprocal-space vectors — the plain-array API (no files needed).

    Args:
        q: (n, 3) spot vectors (Å⁻¹) in any Cartesian frame; the basis comes back in the same
            frame.
        unit_cell: optional known cell (a, b, c, α, β, γ), Å/deg.
        space_group: optional space-group number.
        strategy: the indexing strategy, e.g. ``FFTWIndexing()`` (numpy FFT) or
            ``FFBIdxIndexing()`` (needs ``unit_cell``); default ``AutoIndexing()`` (ffbidx
            with a cell, else fftw on CPU / fft on GPU).
        valid: optional (n,) bool mask.
        options: :class:`IndexOptions`; default the strategy itself (it is one).
        indexer: a ready :class:`~jfx.index.base.Indexer` (overrides ``strategy``).

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
    strategy = strategy if strategy is not None else AutoIndexing()
    if indexer is None:
        indexer = strategy.create_indexer(sym.unit_cell)
    if options is None:
        options = strategy
    v = np.ones(len(q), bool) if valid is None else np.asarray(valid, dtype=bool)
    return index(q[None], v[None], indexer, symmetry=sym, options=options)[0]

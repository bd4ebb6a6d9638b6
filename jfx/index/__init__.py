"""Indexing (``-X``): strategies, the ``index`` verb and the plain-array API.

* :func:`index` — batches of spot-vector sets + an :class:`Indexer` strategy → results;
* :func:`index_vectors` (:mod:`jfx.index.factory`) — one (n, 3) array of reciprocal-space
  vectors (Å⁻¹), with or without a known cell → an :class:`IndexResult` (basis, per-spot
  hkl); no files needed;
* indexers: :class:`jfx.index.fft.FFTIndexer` (``fft`` / ``fftw``, DPS 1-D FFT) and
  :class:`jfx.index.ffbidx.FFBIndexer` (``ffbidx``, known cell), built by the ``-X``
  strategy settings of :mod:`jfx.index.settings` (``FFBIdxIndexing``, ``FFTIndexing``,
  ``FFTWIndexing``, ``AutoIndexing``, ``NoIndexing``; ``create_indexer``);
* :mod:`jfx.index.rotation` — two-pass / single-pass rotation indexing.

Niggli reduction and the Bravais-lattice search are the shared layer :mod:`jfx.symmetry`.
"""

from jfx.lazy import lazy_exports

# re-exports load on first use (PEP 562): importing jfx.index.settings stays free of JAX
__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "IndexResult": "jfx.index.base",
    "IndexStatus": "jfx.index.base",
    "Indexer": "jfx.index.base",
    "index_vectors": "jfx.index.factory",
    "IndexOptions": "jfx.index.options",
    "Symmetry": "jfx.index.indexing",
    "index": "jfx.index.indexing",
    "AutoIndexing": "jfx.index.settings",
    "CrystalSettings": "jfx.index.settings",
    "FFBIdxIndexing": "jfx.index.settings",
    "FFTIndexing": "jfx.index.settings",
    "FFTWIndexing": "jfx.index.settings",
    "IndexSettings": "jfx.index.settings",
    "NoIndexing": "jfx.index.settings",
    "RotationSettings": "jfx.index.settings",
})

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

from jfx.index.base import Indexer as Indexer
from jfx.index.base import IndexResult as IndexResult
from jfx.index.base import IndexStatus as IndexStatus
from jfx.index.factory import index_vectors as index_vectors
from jfx.index.indexing import IndexOptions as IndexOptions
from jfx.index.indexing import Symmetry as Symmetry
from jfx.index.indexing import index as index
from jfx.index.settings import AutoIndexing as AutoIndexing
from jfx.index.settings import CrystalSettings as CrystalSettings
from jfx.index.settings import FFBIdxIndexing as FFBIdxIndexing
from jfx.index.settings import FFTIndexing as FFTIndexing
from jfx.index.settings import FFTWIndexing as FFTWIndexing
from jfx.index.settings import IndexSettings as IndexSettings
from jfx.index.settings import NoIndexing as NoIndexing
from jfx.index.settings import RotationSettings as RotationSettings

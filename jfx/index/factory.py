"""Build the indexer strategy for an algorithm name (``-X``) and the known crystal."""

from __future__ import annotations

import dataclasses

from jfx.index.base import Indexer
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

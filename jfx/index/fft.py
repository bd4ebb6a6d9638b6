"""De-novo indexing by the Rossmann/DPS one-dimensional FFT method (``-X fft`` / ``-X fftw``).

Method (Steller, Bolotovsky & Rossmann, J. Appl. Cryst. 30, 1036–1040, 1997; as in MOSFLM,
Powell 1999, and Jungfraujoch's FFT indexer): if t is the direction of a real-space lattice
vector d = L·t, the projections q·t of all reciprocal-lattice points are multiples of 1/L. So

1. project the spot vectors on N directions t sampled uniformly over a half-sphere;
2. histogram each projection (M bins over [−q_max, q_max]) and take its 1-D FFT — a lattice
   direction shows a strong Fourier peak at frequency k ↔ L = k / (2 q_max); the mean
   spectrum over all directions (the envelope of the spot distribution, which otherwise
   dominates the low frequencies when few, low-resolution spots are available) is
   subtracted and only local maxima of the spectrum count;
3. keep the directions with the strongest peaks, turn each into a vector d = L·t, refine it by
   linear least squares on the spots whose q·d is near an integer, and keep the shortest
   sub-multiple that indexes as many spots;
4. choose three non-coplanar vectors that together index the most spots with the smallest
   volume → candidate bases (the shared code then refines, reduces and finds the lattice).

Steps 1–2 are the expensive part: ``backend="jax"`` runs them as one jit-compiled, vmap-batched
JAX function (``-X fft``; on a GPU this is the cuFFT path), ``backend="numpy"`` as numpy
``bincount`` + ``scipy.fft.rfft`` (``-X fftw``, the CPU path). Steps 3–4 are host numpy on a few
hundred vectors.
"""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from jfx.index.base import Indexer
from jfx.index.common import right_handed
from jfx.index.options import FFTSettings

SPOT_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096)
"""Padded spot counts (one compile per bucket)."""
BIN_BUCKETS = (256, 512, 1024, 2048, 4096)
"""Histogram sizes (powers of two; one compile per size)."""




@functools.lru_cache(maxsize=8)
def half_sphere(n: int) -> np.ndarray:
    """(n, 3) float64 unit vectors on the half-sphere z ≥ 0 (Fibonacci lattice, ~uniform)."""
    i = np.arange(n, dtype=np.float64) + 0.5
    z = 1.0 - i / n  # (0, 1]
    r = np.sqrt(np.maximum(0.0, 1.0 - z * z))
    phi = i * np.pi * (3.0 - np.sqrt(5.0))
    return np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def _bucket(n: int, buckets: tuple[int, ...]) -> int:
    for b in buckets:
        if n <= b:
            return b
    return int(2 ** np.ceil(np.log2(n)))


@functools.partial(jax.jit, static_argnames=("n_bins",))
def _dps_kernel(q: jnp.ndarray, valid: jnp.ndarray, dirs: jnp.ndarray, qmax: jnp.ndarray,
                kmin: jnp.ndarray, kmax: jnp.ndarray, *, n_bins: int):
    """Fourier peak of the projection histogram for every direction, batched over images.

    Args:
        q: (B, n, 3) float32 spot vectors (Å⁻¹), padded.
        valid: (B, n) bool.
        dirs: (N, 3) float32 unit directions.
        qmax: (B,) float32 half-range of the histogram (Å⁻¹).
        kmin, kmax: (B,) int32 Fourier-index window (cell lengths min..max).
        n_bins: histogram bins M (static).

    Returns:
        (peak (B, N) float32 |F(k*)| / n_spots, k* (B, N) int32).
    """

    def one(q1, v1, qm, k0, k1):
        p = dirs @ q1.T  # (N, n)
        b = jnp.floor((p + qm) * (n_bins / (2.0 * qm))).astype(jnp.int32)
        b = jnp.clip(b, 0, n_bins - 1)
        n_dir = dirs.shape[0]
        flat = (jnp.arange(n_dir, dtype=jnp.int32)[:, None] * n_bins + b).reshape(-1)
        w = jnp.broadcast_to(v1.astype(jnp.float32)[None, :], p.shape).reshape(-1)
        hist = jnp.zeros(n_dir * n_bins, jnp.float32).at[flat].add(w).reshape(n_dir, n_bins)
        amp = jnp.abs(jnp.fft.rfft(hist, axis=1))
        # the envelope of the projection histogram (the spread of the spots) is nearly the
        # same in every direction; its spectrum is removed as the mean over directions
        amp = amp - jnp.mean(amp, axis=0, keepdims=True)
        # only local maxima count: a direction whose spots project into a narrow range (e.g.
        # along the beam for a still) has a broad, decreasing spectrum with no peak
        left = jnp.concatenate([jnp.full_like(amp[:, :1], jnp.inf), amp[:, :-1]], axis=1)
        right = jnp.concatenate([amp[:, 1:], jnp.full_like(amp[:, :1], jnp.inf)], axis=1)
        k = jnp.arange(amp.shape[1], dtype=jnp.int32)
        amp = jnp.where((k >= k0) & (k <= k1) & (amp > left) & (amp >= right), amp, 0.0)
        kbest = jnp.argmax(amp, axis=1).astype(jnp.int32)
        peak = jnp.max(amp, axis=1) / jnp.maximum(jnp.sum(v1), 1).astype(jnp.float32)
        return peak, kbest

    return jax.vmap(one)(q, valid, qmax, kmin, kmax)


def _dps_numpy(q: np.ndarray, valid: np.ndarray, dirs: np.ndarray, qmax: float, kmin: int,
               kmax: int, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """numpy/scipy version of :func:`_dps_kernel` for one image (the ``fftw`` path)."""
    import scipy.fft

    qv = q[valid].astype(np.float32)
    n_dir = dirs.shape[0]
    amp = np.empty((n_dir, n_bins // 2 + 1), np.float32)
    step = 2048  # directions per block (bounded temporaries)
    for s in range(0, n_dir, step):
        d = dirs[s:s + step].astype(np.float32)
        p = d @ qv.T
        b = np.floor((p + qmax) * (n_bins / (2.0 * qmax))).astype(np.int64)
        np.clip(b, 0, n_bins - 1, out=b)
        b += (np.arange(d.shape[0], dtype=np.int64) * n_bins)[:, None]
        hist = np.bincount(b.reshape(-1), minlength=d.shape[0] * n_bins).astype(np.float32)
        amp[s:s + step] = np.abs(scipy.fft.rfft(hist.reshape(d.shape[0], n_bins), axis=1,
                                                workers=-1))
    amp -= amp.mean(axis=0, keepdims=True)  # the envelope, as in the JAX kernel
    peak_mask = np.zeros(amp.shape, bool)  # local maxima only, as in the JAX kernel
    peak_mask[:, 1:-1] = (amp[:, 1:-1] > amp[:, :-2]) & (amp[:, 1:-1] >= amp[:, 2:])
    amp[~peak_mask] = 0.0
    amp[:, :kmin] = 0.0
    amp[:, kmax + 1:] = 0.0
    kbest = np.argmax(amp, axis=1).astype(np.int32)
    peak = amp[np.arange(n_dir), kbest] / max(len(qv), 1)
    return peak, kbest


def refine_vectors(d: np.ndarray, q: np.ndarray, tolerance: float = 0.2,
                   n_iter: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares refinement of real-space vectors d (Å) so that q·d is integral.

    For each vector, the spots whose projection q·d lies within ``tolerance`` of an integer m
    are the inliers; d ← argmin Σ (q·d − m)² over them (3 × 3 normal equations, batched).

    Args:
        d: (k, 3) start vectors.
        q: (n, 3) spot vectors (valid ones only).
        tolerance: inlier distance of q·d to the nearest integer.
        n_iter: iterations.

    Returns:
        (refined d (k, 3), number of inliers (k,) int).
    """
    d = np.asarray(d, dtype=np.float64).copy()
    qq = np.einsum("ni,nj->nij", q, q).reshape(len(q), 9)
    for _ in range(n_iter):
        p = q @ d.T  # (n, k)
        m = np.rint(p)
        w = (np.abs(p - m) < tolerance).astype(np.float64)
        A = (w.T @ qq).reshape(-1, 3, 3)
        b = (w * m).T @ q
        ok = (w.sum(0) >= 4) & (np.abs(np.linalg.det(A)) > 1e-12 * np.abs(A).max() ** 3)
        if not ok.any():
            break
        d[ok] = np.linalg.solve(A[ok], b[ok][..., None])[..., 0]
    p = q @ d.T
    return d, np.sum(np.abs(p - np.rint(p)) < tolerance, axis=0)


def _vector_candidates(q: np.ndarray, dirs: np.ndarray, peak: np.ndarray, kbest: np.ndarray,
                       qmax: float, s: FFTSettings) -> np.ndarray:
    """Refined, de-duplicated real-space vector candidates (k, 3), best first."""
    order = np.argsort(-peak, kind="stable")[: s.n_peaks]
    L0 = kbest[order] / (2.0 * qmax)
    order = order[L0 > 0]
    if order.size == 0:
        return np.zeros((0, 3))
    V, C = refine_vectors(dirs[order] * L0[L0 > 0][:, None], q)
    # harmonics: prefer the shortest sub-multiple that indexes (almost) as many spots
    for div in (2, 3):
        V2, C2 = refine_vectors(V / div, q)
        better = (C2 >= 0.9 * C) & (np.linalg.norm(V2, axis=1) >= s.min_cell_A)
        V[better], C[better] = V2[better], C2[better]
    L = np.linalg.norm(V, axis=1)
    inside = (L >= s.min_cell_A) & (L <= s.max_cell_A * 1.05) & np.isfinite(L)
    V, C, L = V[inside], C[inside], L[inside]
    if len(V) == 0:
        return np.zeros((0, 3))
    # sort: most spots indexed, then shortest; drop (anti)parallel duplicates of equal length
    order = np.lexsort((L, -C))
    U = V / L[:, None]
    cos3 = np.cos(np.radians(3.0))
    keep: list[int] = []
    for i in order:
        if keep:
            kk = np.array(keep)
            if np.any((np.abs(U[kk] @ U[i]) > cos3) & (np.abs(L[kk] - L[i]) < 0.05 * L[kk])):
                continue
        keep.append(i)
        if len(keep) >= s.n_vectors:
            break
    return V[keep]


def _basis_candidates(q: np.ndarray, V: np.ndarray, n_out: int,
                      tolerance: float = 0.2) -> np.ndarray:
    """Triples of non-coplanar vectors indexing the most spots, smallest volume on ties."""
    k = len(V)
    if k < 3:
        return np.zeros((0, 3, 3))
    P = q @ V.T  # (n, k)
    ok = np.abs(P - np.rint(P)) < tolerance  # (n, k) per-vector integrality
    L = np.linalg.norm(V, axis=1)
    tri = np.array(list(itertools.combinations(range(k), 3)))
    B = V[tri]  # (t, 3, 3)
    vol = np.abs(np.linalg.det(B))
    sinmin = vol / np.prod(L[tri], axis=1)
    good = sinmin > np.sin(np.radians(20.0))  # not (nearly) coplanar
    tri, vol = tri[good], vol[good]
    if len(tri) == 0:
        return np.zeros((0, 3, 3))
    okf = ok.astype(np.float32)
    # spots integral for all three vectors of each triple
    count = (okf[:, tri[:, 0]] * okf[:, tri[:, 1]] * okf[:, tri[:, 2]]).sum(0)
    # rank: most spots; among those within 2 % of the best count, the smallest volume
    order = np.lexsort((vol, -count))
    best = count[order[0]]
    near = order[count[order] >= 0.98 * best]
    near = near[np.argsort(vol[near], kind="stable")]
    rest = order[count[order] < 0.98 * best]
    sel = np.concatenate([near, rest])[:n_out]
    return np.array([right_handed(V[tri[i]]) for i in sel])


class FFTIndexer(Indexer):
    """De-novo indexer, Rossmann/DPS 1-D FFT (Steller, Bolotovsky & Rossmann 1997)."""

    known_cell = False

    def __init__(self, settings: FFTSettings | None = None) -> None:
        self.settings = settings or FFTSettings()
        self._dirs64 = half_sphere(self.settings.n_directions)
        self._dirs_dev = None

    def _search(self, q: np.ndarray, valid: np.ndarray):
        """(peak, kbest, qmax) per image for the spots used in the direction search."""
        s = self.settings
        B = q.shape[0]
        # the lowest-resolution max_spots valid spots of each image
        qn = np.where(valid, np.linalg.norm(q, axis=2), np.inf)
        n_use = int(min(s.max_spots, max(1, valid.sum(axis=1).max())))
        npad = _bucket(n_use, SPOT_BUCKETS)
        order = np.argsort(qn, axis=1, kind="stable")[:, :npad]
        qs = np.take_along_axis(q, order[:, :, None], axis=1)
        vs = np.take_along_axis(valid, order, axis=1)
        if order.shape[1] < npad:
            pad = npad - order.shape[1]
            qs = np.concatenate([qs, np.zeros((B, pad, 3))], axis=1)
            vs = np.concatenate([vs, np.zeros((B, pad), bool)], axis=1)
        vs[:, n_use:] = False
        qmax = np.array([np.linalg.norm(qs[b][vs[b]], axis=1).max() if vs[b].any() else 1.0
                         for b in range(B)]) * 1.001
        # Nyquist: the period of the longest cell is 1/max_cell; 2 bins per period at least
        need = 4.0 * qmax.max() * s.max_cell_A
        n_bins = _bucket(int(np.ceil(need)), BIN_BUCKETS)
        # k ≤ 2 is the envelope of the projection histogram (the spread of the spots), not a
        # lattice period
        kmin = np.maximum(np.ceil(2 * qmax * s.min_cell_A), 3).astype(np.int32)
        kmax = np.minimum(np.ceil(2 * qmax * s.max_cell_A), n_bins // 2).astype(np.int32)
        if s.backend == "jax":
            if self._dirs_dev is None:
                self._dirs_dev = jnp.asarray(self._dirs64, dtype=jnp.float32)
            peak, kbest = _dps_kernel(jnp.asarray(qs, jnp.float32), jnp.asarray(vs),
                                      self._dirs_dev, jnp.asarray(qmax, jnp.float32),
                                      jnp.asarray(kmin), jnp.asarray(kmax), n_bins=n_bins)
            peak, kbest = np.asarray(peak), np.asarray(kbest)
        else:
            out = [_dps_numpy(qs[b], vs[b], self._dirs64, float(qmax[b]), int(kmin[b]),
                              int(kmax[b]), n_bins) for b in range(B)]
            peak = np.stack([o[0] for o in out])
            kbest = np.stack([o[1] for o in out])
        return peak, kbest, qmax

    def candidates(self, q: np.ndarray, valid: np.ndarray) -> list[np.ndarray]:
        q = np.asarray(q, dtype=np.float64)
        valid = np.asarray(valid, dtype=bool)
        if q.shape[0] == 0:
            return []
        peak, kbest, qmax = self._search(q, valid)
        out = []
        for b in range(q.shape[0]):
            qv = q[b][valid[b]]
            if len(qv) < 3:
                out.append(np.zeros((0, 3, 3)))
                continue
            V = _vector_candidates(qv, self._dirs64, peak[b], kbest[b], float(qmax[b]),
                                   self.settings)
            out.append(_basis_candidates(qv, V, self.settings.n_output))
        return out

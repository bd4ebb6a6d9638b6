"""Settings of the indexing searches, free of JAX (:mod:`jfx.config` imports them for
``--help`` and the config checks; :mod:`jfx.lazy`): the post-processing options shared by
every ``-X`` strategy (:class:`IndexOptions`, used by :func:`jfx.index.indexing.index`) and
the parameters of the two searches (:class:`FFTSettings` of :mod:`jfx.index.fft`,
:class:`FFBSettings` of :mod:`jfx.index.ffbidx`)."""

from __future__ import annotations

import dataclasses

from jfx.validate import Settings, setting


@dataclasses.dataclass(frozen=True)
class IndexOptions(Settings):
    """Shared post-processing parameters: the base settings dataclass of every indexing
    strategy (:class:`jfx.index.settings.IndexSettings`), whose instance is passed to
    :func:`index` as these options (config keys ``index.*`` of every ``-X`` option).

    Attributes:
        tolerance: a spot is indexed when its fractional indices lie within this Euclidean
            distance of integers.
        min_spots: images with fewer valid spots are not attempted (status TOO_FEW_SPOTS).
        min_indexed: a lattice must index at least this many spots …
        min_fraction: … and this fraction of the spots it was searched in, …
        max_rms: … with an rms distance of its indexed spots to integer hkl ≤ this
            (simulated stills ≤ 0.07 in 95 % of cases, the real spot lists of ffbidx_simple
            0.11–0.12; chance fits of random spots 0.10–0.15).
        min_cell_A: … and every edge of its reduced cell ≥ this (Å, default 5): blank real
            frames gave de-novo lattices with 0.8–7.6 Å edges that index the spots as 000 or
            by chance; macromolecular cells are far larger (set 2–3 Å for small molecules).
        min_indexed_de_novo: de-novo indexers (no known cell in the search) must index at
            least this many spots: with few spots and a free cell almost anything fits
            (measured on blank frames with 5–40 random spots: 11 % false positives at 8, 0 %
            at 15 together with ``max_rms``).
        max_lattices: lattices per image (further ones from the unindexed spots).
        length_tol: relative length tolerance of the Bravais search / cell match (3 %).
        angle_tol_deg: angle tolerance of the Bravais search / cell match (3°).
        n_try: candidate bases refined per search (best first).
        trim_fraction: least-trimmed-squares fraction of the inliers used in the fit.
    """

    config_node = "index"

    tolerance: float = setting(0.2, positive=True)
    min_spots: int = setting(8, minimum=3)
    min_indexed: int = setting(8, minimum=3)
    min_fraction: float = setting(0.5, minimum=0.0, maximum=1.0)
    max_rms: float = setting(0.15, positive=True)
    min_cell_A: float = setting(5.0, minimum=0.0)
    min_indexed_de_novo: int = setting(15, minimum=3)
    max_lattices: int = setting(1, minimum=1)
    length_tol: float = setting(0.03, positive=True)
    angle_tol_deg: float = setting(3.0, positive=True)
    n_try: int = setting(4, minimum=1)
    trim_fraction: float = setting(0.9, positive=True, maximum=1.0)

    def validate(self) -> None:
        if self.tolerance >= 0.5:
            raise ValueError(f"index.tolerance must be < 0.5, got {self.tolerance:g}")


@dataclasses.dataclass(frozen=True)
class FFTSettings(Settings):
    """Parameters of the DPS/1-D FFT search.

    Attributes:
        n_directions: directions sampled over the half-sphere (≈ 2.2° spacing at 4096; the
            vector refinement recovers the exact direction; 4096 measured as reliable as
            16384 on simulated stills at half the time).
        max_cell_A: longest real-space vector searched (Å); sets the histogram size.
        min_cell_A: shortest real-space vector searched (Å).
        max_spots: at most this many spots (the lowest-resolution ones) enter the direction
            search; the refinement uses all.
        n_peaks: strongest directions turned into vector candidates.
        n_vectors: vector candidates kept for the basis search.
        n_output: candidate bases returned.
        backend: ``jax`` (jit/vmap, CPU or GPU) or ``numpy`` (numpy + scipy.fft); set by the
            strategy (``-X fft`` / ``fftw``), not a config key.
    """

    config_node = "index.fft"

    n_directions: int = setting(4096, minimum=64)
    max_cell_A: float = setting(250.0, positive=True)
    min_cell_A: float = setting(4.0, positive=True)
    max_spots: int = setting(400, minimum=8)
    n_peaks: int = setting(256, minimum=3)
    n_vectors: int = setting(30, minimum=3)
    n_output: int = setting(4, minimum=1)
    backend: str = setting("jax", choices=("jax", "numpy"), config=False)

    def validate(self) -> None:
        if self.min_cell_A >= self.max_cell_A:
            raise ValueError(f"index.fft.min_cell_A ({self.min_cell_A:g}) must be < "
                             f"max_cell_A ({self.max_cell_A:g})")


@dataclasses.dataclass(frozen=True)
class FFBSettings(Settings):
    """Parameters of the fast-feedback (known-cell) indexer.

    Attributes:
        n_halfsphere: directions sampled on the half sphere per vector length (step 1).
        n_candidates: best directions kept per vector length (step 1).
        triml, trimh: clamp of the distance to the nearest integer in the score
            (index units), 0 ≤ triml < trimh ≤ 0.5 (trimh ≤ 1 for the cell score).
        delta: offset inside the log of the score (> 0).
        max_spots: at most this many spots (the first valid ones) are used per image.
        min_spots: images with fewer valid spots get no candidate.
        n_angles: rotation angles about each candidate direction (step 2); 0 = auto (see
            module docstring).
        angle_step: auto rule: largest index change of the far end of the longest other
            vector at the outermost spot per angle step (index units).
        max_angles: cap of the auto angle count.
        n_cells: best sampled cells carried into the refinement (≥ n_output).
        n_output: candidate bases returned per image (best first, distinct).
        n_refine: Kabsch orientation-refinement iterations (0 = none).
        dist3: inlier threshold of the refinement (max-norm distance, index units).
        fast_log: score with a polynomial log2 approximation (faster on XLA-CPU).
        coarse_directions: coarse-to-fine step 1 (default): score this many half-sphere
            directions, keep the best ``coarse_keep``, then score a ``fine_steps`` ×
            ``fine_steps`` patch of directions (± 0.6 coarse spacings) around each and keep
            the best ``n_candidates``. 0 = one level with ``n_halfsphere`` directions.
        coarse_keep: coarse directions refined per vector length.
        fine_steps: fine-patch grid size per axis.
    """

    config_node = "index.ffbidx"

    n_halfsphere: int = 32 * 1024
    n_candidates: int = 32
    triml: float = 0.001
    trimh: float = 0.3
    delta: float = 0.1
    max_spots: int = 200
    min_spots: int = 6
    n_angles: int = 0
    angle_step: float = 0.3
    max_angles: int = 4096
    n_cells: int = 8
    n_output: int = 4
    n_refine: int = 3
    dist3: float = 0.15
    fast_log: bool = True
    coarse_directions: int = 4096
    coarse_keep: int = 256
    fine_steps: int = 5

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ValueError(f"index.ffbidx: {msg}")

        need(self.n_halfsphere >= 16, f"n_halfsphere must be >= 16, got {self.n_halfsphere}")
        need(1 <= self.n_candidates <= self.n_halfsphere,
             f"n_candidates must be in 1..n_halfsphere, got {self.n_candidates}")
        need(0 <= self.triml < self.trimh <= 0.5,
             f"need 0 <= triml < trimh <= 0.5, got triml={self.triml}, trimh={self.trimh}")
        need(self.delta > 0, f"delta must be > 0, got {self.delta}")
        need(self.min_spots >= 3, f"min_spots must be >= 3, got {self.min_spots}")
        need(self.max_spots >= self.min_spots,
             f"max_spots must be >= min_spots, got {self.max_spots}")
        need(self.n_angles >= 0, f"n_angles must be >= 0 (0 = auto), got {self.n_angles}")
        need(0 < self.angle_step <= 1, f"angle_step must be in (0, 1], got {self.angle_step}")
        need(self.max_angles >= 4, f"max_angles must be >= 4, got {self.max_angles}")
        need(self.n_output >= 1, f"n_output must be >= 1, got {self.n_output}")
        need(self.n_cells >= self.n_output,
             f"n_cells must be >= n_output, got {self.n_cells} < {self.n_output}")
        need(self.n_refine >= 0, f"n_refine must be >= 0, got {self.n_refine}")
        need(0 < self.dist3 <= 0.5, f"dist3 must be in (0, 0.5], got {self.dist3}")
        need(self.coarse_directions == 0 or self.coarse_directions >= 16,
             f"coarse_directions must be 0 (off) or >= 16, got {self.coarse_directions}")
        if self.coarse_directions:
            need(1 <= self.coarse_keep <= self.coarse_directions,
                 f"coarse_keep must be in 1..coarse_directions, got {self.coarse_keep}")
            need(self.fine_steps >= 2, f"fine_steps must be >= 2, got {self.fine_steps}")
            need(self.n_candidates <= self.coarse_keep * self.fine_steps ** 2,
                 "n_candidates must be <= coarse_keep * fine_steps**2")

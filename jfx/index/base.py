"""The indexing interface: result type, status codes and the abstract candidate generator.

Frames and units: reciprocal-space spot vectors ``q`` are (n, 3) float64 in Å⁻¹, lab frame
(McStas: z along the beam, y up), ``q = s1 − s0`` with ``|s0| = |s1| = 1/λ``. A lattice is a
(3, 3) real-space basis whose rows are a, b, c in Å in the same frame, so the (fractional)
Miller indices of a spot are ``h = q @ basis.T`` (see :mod:`jfx.models.lattice`).

An indexer is split in two parts:

* an :class:`Indexer` strategy proposes **candidate bases** per image (the expensive search:
  DPS/FFT over directions, or known-cell orientation sampling — jit/vmap-compiled JAX or
  numpy), and
* the shared verb :func:`jfx.index.index` turns candidates into a result: least-trimmed-
  squares refinement against all spots, Niggli reduction and Bravais-lattice search (or the
  known cell / space group), a viability test, per-spot Miller indices, and further lattices
  from the spots left unindexed.

A method developer adds an indexer as one subclass implementing :meth:`Indexer.candidates`.
"""

from __future__ import annotations

import abc
import enum

import jax.numpy as jnp
import numpy as np

from jfx.models._pytree import pytree_dataclass, static


class IndexStatus(enum.IntEnum):
    """Per-image outcome (data, not exceptions)."""

    OK = 0
    TOO_FEW_SPOTS = 1  # fewer valid spots than the indexer needs
    NO_CANDIDATE = 2  # the search proposed nothing usable
    NOT_VIABLE = 3  # best lattice indexes too few spots
    CELL_MISMATCH = 4  # lattice found but it does not match -C / the space group's lattice
    NOT_RUN = 5  # indexing not attempted (e.g. -X none)


@pytree_dataclass
class IndexResult:
    """Indexing result of one image (or of one set of spot vectors).

    Attributes:
        basis: (L, 3, 3) float64 real-space bases, rows a, b, c (Å, lab frame), in the
            conventional setting; NaN for unused slots (L = maximum lattices).
        n_indexed: (L,) int32 spots indexed by each lattice (0 for unused slots).
        hkl: (n, 3) int32 Miller indices of each spot in its lattice (0 if unindexed).
        lattice_id: (n,) int32 lattice of each spot, −1 = unindexed.
        residual: (L,) float64 rms distance of the indexed spots' fractional indices to the
            integers (dimensionless, in units of the lattice spacing).
        status: int32 :class:`IndexStatus`.
        bravais: static Bravais-lattice symbol of the first lattice (``aP`` … ``cF``;
            ``""`` if none).
    """

    basis: jnp.ndarray
    n_indexed: jnp.ndarray
    hkl: jnp.ndarray
    lattice_id: jnp.ndarray
    residual: jnp.ndarray
    status: jnp.ndarray
    bravais: str = static("")

    @property
    def n_lattices(self) -> int:
        return int(np.sum(np.asarray(self.n_indexed) > 0))

    @property
    def indexed(self) -> bool:
        return int(self.status) == IndexStatus.OK

    @staticmethod
    def empty(n_spots: int, max_lattices: int, status: IndexStatus) -> IndexResult:
        """A result with no lattice."""
        return IndexResult(
            basis=np.full((max_lattices, 3, 3), np.nan),
            n_indexed=np.zeros(max_lattices, np.int32),
            hkl=np.zeros((n_spots, 3), np.int32),
            lattice_id=np.full(n_spots, -1, np.int32),
            residual=np.full(max_lattices, np.nan),
            status=np.int32(status),
            bravais="",
        )


class Indexer(abc.ABC):
    """Proposes candidate lattice bases for batches of spot-vector sets.

    Subclasses implement :meth:`candidates`; everything else (refinement, reduction, symmetry,
    viability, Miller indices, multiple lattices) is shared by :func:`jfx.index.index`.
    """

    #: True if the candidates are already in the setting of the known cell (``-C``), so the
    #: shared post-processing skips the Bravais search and only re-checks the cell.
    known_cell: bool = False

    @abc.abstractmethod
    def candidates(self, q: np.ndarray, valid: np.ndarray) -> list[np.ndarray]:
        """Candidate bases for a batch of images.

        Args:
            q: (B, n, 3) float64 spot vectors (Å⁻¹, lab frame), padded.
            valid: (B, n) bool, True where ``q`` holds a spot.

        Returns:
            B arrays of shape (k_b, 3, 3) float64: candidate real-space bases (rows a, b, c in
            Å), best first. k_b may be 0. They need not be reduced or refined.
        """

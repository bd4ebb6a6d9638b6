"""Indexing settings: the ``-X`` strategies (config group ``index``), the crystal (``-C``/``-S``)
and rotation indexing (``-R``…).

Every ``-X`` option is its own class, named by ``conf/index/<option>.yaml``; all share the
one base settings dataclass :class:`jfx.index.options.IndexOptions` (the post-processing
options, config keys ``index.*``), and each builds its :class:`jfx.index.base.Indexer` with
:meth:`IndexSettings.create_indexer`. The strategy object itself is the options passed to
:func:`jfx.index.indexing.index`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from jfx.index.options import FFBSettings, FFTSettings, IndexOptions
from jfx.symmetry.groups import check_cell_and_space_group
from jfx.validate import Settings, setting

if TYPE_CHECKING:  # the indexers need JAX: imported where they are built (jfx.lazy)
    from jfx.index.base import Indexer
    from jfx.index.ffbidx import FFBIndexer
    from jfx.index.fft import FFTIndexer

DEFAULT_TWO_PASS_IMAGES = 30
"""Images in the first pass of two-pass rotation indexing when ``-R`` has no value (seed)."""
DEFAULT_SINGLE_PASS_DEG = 10.0
"""Minimum angular range (deg) for ``--single-pass-rotation`` without a value (our choice)."""


def _on_gpu(gpu: bool | None) -> bool:
    if gpu is not None:
        return bool(gpu)
    import jax

    return jax.default_backend() != "cpu"


@dataclasses.dataclass(frozen=True)
class IndexSettings(IndexOptions, abc.ABC):
    """Interface of the indexing strategies (config group ``index``; ``-X``).

    Class attributes: ``name`` (the indexer's name on the console and in the output),
    ``needs_cell`` (``-C`` is required), ``enabled`` (``-X none``: False).
    """

    name: ClassVar[str] = ""
    needs_cell: ClassVar[bool] = False
    enabled: ClassVar[bool] = True

    def resolve(self, unit_cell: Any = None, gpu: bool | None = None) -> IndexSettings:
        """The concrete strategy that runs (itself; ``auto`` chooses one)."""
        return self

    @abc.abstractmethod
    def create_indexer(self, unit_cell: Any = None, gpu: bool | None = None) -> Indexer | None:
        """The :class:`~jfx.index.base.Indexer` of this strategy (None: no indexing).

        Args:
            unit_cell: the known cell (a, b, c, α, β, γ) or None.
            gpu: whether JAX runs on a GPU (None: ask JAX).

        Raises:
            ValueError: the strategy needs a unit cell and none is given (one line).
        """

    def shared_options(self) -> dict[str, Any]:
        """The :class:`IndexOptions` fields of this strategy (to build another one)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(IndexOptions)}


@dataclasses.dataclass(frozen=True)
class FFBIdxIndexing(IndexSettings):
    """``-X ffbidx``: known-cell search (fast-feedback indexer / TORO); needs ``-C``.

    Attributes:
        ffbidx: parameters of the search (:class:`jfx.index.options.FFBSettings`).
    """

    name = "ffbidx"
    needs_cell = True

    ffbidx: FFBSettings = dataclasses.field(default_factory=FFBSettings)

    def create_indexer(self, unit_cell: Any = None, gpu: bool | None = None) -> FFBIndexer:
        if unit_cell is None:
            raise ValueError("indexing algorithm ffbidx requires a unit cell "
                             "(-C a,b,c,alpha,beta,gamma)")
        from jfx.index.ffbidx import FFBIndexer

        return FFBIndexer(cell=tuple(float(v) for v in unit_cell), settings=self.ffbidx)


@dataclasses.dataclass(frozen=True)
class FFTIndexing(IndexSettings):
    """``-X fft``: de-novo DPS/1-D FFT search in JAX (CPU or GPU).

    Attributes:
        fft: parameters of the search (:class:`jfx.index.options.FFTSettings`).
    """

    name = "fft"
    backend: ClassVar[str] = "jax"

    fft: FFTSettings = dataclasses.field(default_factory=FFTSettings)

    def create_indexer(self, unit_cell: Any = None, gpu: bool | None = None) -> FFTIndexer:
        from jfx.index.fft import FFTIndexer

        return FFTIndexer(dataclasses.replace(self.fft, backend=self.backend))


@dataclasses.dataclass(frozen=True)
class FFTWIndexing(FFTIndexing):
    """``-X fftw``: the same search on the host (numpy + scipy.fft)."""

    name = "fftw"
    backend: ClassVar[str] = "numpy"


@dataclasses.dataclass(frozen=True)
class AutoIndexing(IndexSettings):
    """``-X auto`` (default): ``ffbidx`` when a unit cell is known, else ``fft`` on a GPU and
    ``fftw`` on a CPU (:meth:`resolve`, the one place of this rule).

    Attributes:
        fft: parameters of the FFT search; ffbidx: parameters of the known-cell search.
    """

    name = "auto"

    fft: FFTSettings = dataclasses.field(default_factory=FFTSettings)
    ffbidx: FFBSettings = dataclasses.field(default_factory=FFBSettings)

    def resolve(self, unit_cell: Any = None, gpu: bool | None = None) -> IndexSettings:
        if unit_cell is not None:
            return FFBIdxIndexing(**self.shared_options(), ffbidx=self.ffbidx)
        cls = FFTIndexing if _on_gpu(gpu) else FFTWIndexing
        return cls(**self.shared_options(), fft=self.fft)

    def create_indexer(self, unit_cell: Any = None, gpu: bool | None = None) -> Indexer:
        return self.resolve(unit_cell, gpu).create_indexer(unit_cell, gpu)


@dataclasses.dataclass(frozen=True)
class NoIndexing(IndexSettings):
    """``-X none``: no indexing (spot finding and azimuthal integration only). The shared
    options still apply to ``--force-rotation-lattice``."""

    name = "none"
    enabled = False

    def create_indexer(self, unit_cell: Any = None, gpu: bool | None = None) -> None:
        return None


@dataclasses.dataclass(frozen=True)
class CrystalSettings(Settings):
    """Known crystal (config group ``crystal``).

    Attributes:
        unit_cell: (a, b, c, α, β, γ) in Å/deg (``-C``) or ``None``.
        space_group: International Tables number 1–230 (``-S``) or ``None``.
        ignore_file_space_group: never use the space group stored in the master file
            (``--ignore-file-space-group``). Indexing never uses it (without ``-S`` the
            Bravais search picks the lattice); by default, after indexing, integration and
            merging use the file's space group when the found cell fits it. With this option
            they use ``-S`` only (none: P1), i.e. a fully de-novo run.

    The cell must be geometrically possible and fit the space group's crystal system
    (:func:`jfx.symmetry.groups.check_cell_and_space_group`).
    """

    config_node = "crystal"

    unit_cell: tuple[float, ...] | None = setting(None, label="unit cell (-C)")
    space_group: int | None = setting(None, error="space group must be a number 1-230")
    ignore_file_space_group: bool = False

    def validate(self) -> None:
        cell, sg = check_cell_and_space_group(self.unit_cell, self.space_group)
        self._replace_field("unit_cell", cell)
        self._replace_field("space_group", sg)


@dataclasses.dataclass(frozen=True)
class RotationSettings(Settings):
    """Rotation-data indexing (config group ``rotation``).

    Attributes:
        two_pass_images: ``-R[=n]``: two-pass offline rotation indexing with the first pass
            over n images (``-R`` alone: 30); ``None`` = off.
        single_pass_deg: ``--single-pass-rotation[=deg]``: online-like single-pass indexing
            that waits for this minimum angular range (alone: 10°); ``None`` = off.
        redo_spots: ``--redo-rotation-spots``: redo spot finding for the first pass instead of
            using spots stored in the master file.
        force_lattice: ``--force-rotation-lattice``: 9 floats, the angle-0 real-space basis
            a, b, c (Å, lab frame, row major), skipping the first pass; ``None`` = off.
    """

    config_node = "rotation"

    two_pass_images: int | None = setting(None, minimum=1,
                                          label="two-pass rotation images (-R)")
    single_pass_deg: float | None = setting(
        None, positive=True, label="single-pass rotation range (--single-pass-rotation)")
    redo_spots: bool = False
    force_lattice: tuple[float, float, float, float, float, float, float, float, float] | None \
        = setting(None, label="rotation lattice (--force-rotation-lattice)")

    @property
    def requested(self) -> bool:
        """Whether a rotation mode was chosen (``-R``, ``--single-pass-rotation`` or
        ``--force-rotation-lattice``); without one, rotation data are indexed as stills."""
        return (self.two_pass_images is not None or self.single_pass_deg is not None
                or self.force_lattice is not None)

    def validate(self) -> None:
        lat = self.force_lattice
        if lat is not None and abs(np.linalg.det(np.reshape(lat, (3, 3)))) < 1e-6:
            raise ValueError("rotation lattice (--force-rotation-lattice) has zero volume")

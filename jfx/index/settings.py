"""Indexing settings: algorithm (``-X``), crystal (``-C``/``-S``), rotation indexing (``-R``…)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np

from jfx.index.ffbidx import FFBSettings
from jfx.index.fft import FFTSettings
from jfx.index.indexing import IndexOptions
from jfx.symmetry.groups import check_cell_and_space_group
from jfx.validate import as_bool, as_choice, as_float, as_floats, as_int

ALGORITHMS = ("ffbidx", "fft", "fftw", "auto", "none")
DEFAULT_TWO_PASS_IMAGES = 30
"""Images in the first pass of two-pass rotation indexing when ``-R`` has no value (seed)."""
DEFAULT_SINGLE_PASS_DEG = 10.0
"""Minimum angular range (deg) for ``--single-pass-rotation`` without a value (our choice)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class IndexSettings(IndexOptions):
    """Indexing (config group ``index``; the option is ``-X``, case-insensitive).

    The shared post-processing options are inherited from
    :class:`jfx.index.indexing.IndexOptions` (tolerance, viability, lattices, Bravais
    tolerances; documented there).

    Attributes:
        algorithm: ``ffbidx`` (known-cell, fast-feedback), ``fft`` (de novo, JAX FFT),
            ``fftw`` (de novo, numpy/scipy FFT), ``auto`` or ``none`` (no indexing).
            ``auto`` resolves (see :meth:`resolve`) to ``ffbidx`` when a unit cell is known,
            else to ``fft`` on a GPU and ``fftw`` on a CPU.
        fft: parameters of the DPS/FFT search (:class:`jfx.index.fft.FFTSettings`).
        ffbidx: parameters of the known-cell search (:class:`jfx.index.ffbidx.FFBSettings`).
    """

    algorithm: str = "auto"
    fft: Any = None
    ffbidx: Any = None

    def __post_init__(self) -> None:
        super().__post_init__()
        s = object.__setattr__
        s(self, "algorithm", as_choice("indexing algorithm (-X)", self.algorithm, ALGORITHMS))
        s(self, "fft", _sub(FFTSettings, self.fft, "index.fft"))
        s(self, "ffbidx", _sub(FFBSettings, self.ffbidx, "index.ffbidx"))

    def options(self) -> IndexOptions:
        """The shared post-processing options alone."""
        return IndexOptions(**{f.name: getattr(self, f.name)
                               for f in dataclasses.fields(IndexOptions)})

    def resolve(self, cell_known: bool, gpu: bool) -> str:
        """The concrete algorithm: ``auto`` → ffbidx (cell known) / fft (GPU) / fftw (CPU)."""
        if self.algorithm != "auto":
            return self.algorithm
        if cell_known:
            return "ffbidx"
        return "fft" if gpu else "fftw"


def _sub(cls, value, where: str):
    """A nested settings dataclass from a mapping (config) or an instance."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"{where} must be a mapping of settings, got {value!r}")  # noqa: TRY004
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(value) - names
    if unknown:
        raise ValueError(f"unknown {where} setting(s): {', '.join(sorted(map(str, unknown)))}")
    return cls(**dict(value))


@dataclasses.dataclass(frozen=True)
class CrystalSettings:
    """Known crystal (config node ``crystal``).

    Attributes:
        unit_cell: (a, b, c, α, β, γ) in Å/deg (``-C``) or ``None``.
        space_group: International Tables number 1–230 (``-S``) or ``None``.

    The cell must be geometrically possible and fit the space group's crystal system
    (:func:`jfx.symmetry.groups.check_cell_and_space_group`).
    """

    unit_cell: tuple[float, ...] | None = None
    space_group: int | None = None

    def __post_init__(self) -> None:
        cell = self.unit_cell
        if isinstance(cell, str):
            cell = as_floats("unit cell (-C)", cell)
        sg = self.space_group
        if sg is not None:
            try:
                sg = as_int("space group (-S)", sg)
            except ValueError:
                raise ValueError(
                    f"space group must be a number 1-230, got {self.space_group!r}") from None
        cell, sg = check_cell_and_space_group(cell, sg)
        object.__setattr__(self, "unit_cell", cell)
        object.__setattr__(self, "space_group", sg)


@dataclasses.dataclass(frozen=True)
class RotationSettings:
    """Rotation-data indexing (config node ``rotation``).

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

    two_pass_images: int | None = None
    single_pass_deg: float | None = None
    redo_spots: bool = False
    force_lattice: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        s = object.__setattr__
        s(self, "two_pass_images", as_int("two-pass rotation images (-R)", self.two_pass_images,
                                          minimum=1, allow_none=True))
        s(self, "single_pass_deg", as_float("single-pass rotation range (--single-pass-rotation)",
                                            self.single_pass_deg, positive=True, allow_none=True))
        s(self, "redo_spots", as_bool("redo_spots", self.redo_spots))
        lat = as_floats("rotation lattice (--force-rotation-lattice)", self.force_lattice, 9,
                        allow_none=True)
        if lat is not None and abs(np.linalg.det(np.reshape(lat, (3, 3)))) < 1e-6:
            raise ValueError("rotation lattice (--force-rotation-lattice) has zero volume")
        s(self, "force_lattice", lat)

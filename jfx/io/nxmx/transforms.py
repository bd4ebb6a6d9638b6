"""NXtransformations: unit conversion, transformation datasets and ``depends_on`` chains.

* :func:`length_factor`, :func:`angle_factor`, :func:`read_length` — ``units`` attributes
  → metres / degrees (an unknown unit is an :class:`~jfx.io.errors.InputError`).
* :class:`Transform` — one transformation dataset (unit vector, offset in m, values in m or
  deg) and its 4×4 homogeneous matrix; :func:`chain_matrix` composes a chain.
* :class:`Transformations` — resolves ``depends_on`` references in one open file and
  follows chains (innermost first), tolerating targets stored under another group.

Vectors are in the NXmx/McStas lab frame (z along the beam, y up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from jfx.io.errors import InputError
from jfx.io.h5util import attr_str, read_scalar

_LENGTH_M = {
    "m": 1.0, "meter": 1.0, "metre": 1.0, "meters": 1.0, "metres": 1.0,
    "cm": 1e-2, "mm": 1e-3, "millimeter": 1e-3, "millimetre": 1e-3, "millimeters": 1e-3,
    "um": 1e-6, "µm": 1e-6, "μm": 1e-6, "micron": 1e-6, "microns": 1e-6, "micrometer": 1e-6,
    "micrometre": 1e-6, "nm": 1e-9, "nanometer": 1e-9, "angstrom": 1e-10, "angstroms": 1e-10,
    "a": 1e-10, "å": 1e-10, "ang": 1e-10,
}
_ANGLE_DEG = {
    "deg": 1.0, "degree": 1.0, "degrees": 1.0, "°": 1.0,
    "rad": 180.0 / math.pi, "radian": 180.0 / math.pi, "radians": 180.0 / math.pi,
}


# ----------------------------------------------------------------------------------------
# units


def length_factor(unit: str | None, where: str, path: Path) -> float:
    """Metres per ``unit`` (default m); ``where`` names the dataset in the error."""
    u = (unit or "m").strip().lower()
    if u not in _LENGTH_M:
        raise InputError(f"unknown length unit '{unit}' for {where} in {path}")
    return _LENGTH_M[u]


def angle_factor(unit: str | None, where: str, path: Path) -> float:
    """Degrees per ``unit`` (default deg)."""
    u = (unit or "deg").strip().lower()
    if u not in _ANGLE_DEG:
        raise InputError(f"unknown angle unit '{unit}' for {where} in {path}")
    return _ANGLE_DEG[u]


def read_length(ds: h5py.Dataset, path: Path, default_unit: str = "m") -> float:
    """Scalar length in metres, honouring the ``units`` attribute."""
    return read_scalar(ds) * length_factor(attr_str(ds, "units", default_unit), ds.name, path)


# ----------------------------------------------------------------------------------------
# NXtransformations


@dataclass
class Transform:
    """One NXtransformations dataset, converted to metres / degrees."""

    path: str
    ttype: str            # "translation" | "rotation"
    vector: np.ndarray    # (3,) unit vector
    offset_m: np.ndarray  # (3,)
    values: np.ndarray    # (n,) metres (translation) or degrees (rotation)
    depends_on: str       # resolved-later reference ("." = end of chain)
    group: str            # parent group (for relative references)

    def value(self, k: int = 0) -> float:
        return float(self.values[min(k, len(self.values) - 1)])

    def matrix(self, k: int = 0) -> np.ndarray:
        """4×4 homogeneous matrix (NeXus: translation [I | o + v·x], rotation [R(v,x) | o])."""
        M = np.eye(4)
        if self.ttype == "rotation":
            M[:3, :3] = rotation_matrix(self.vector, math.radians(self.value(k)))
            M[:3, 3] = self.offset_m
        else:
            M[:3, 3] = self.offset_m + self.vector * self.value(k)
        return M


def rotation_matrix(axis: np.ndarray, angle: float) -> np.ndarray:
    """(3, 3) right-handed rotation by ``angle`` (rad) about ``axis`` (Rodrigues)."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * (K @ K)


def chain_matrix(chain: list[Transform], k: int = 0) -> np.ndarray:
    """4×4 matrix of a chain (inner → outer: M = T_outer … T_inner) at scan point ``k``."""
    M = np.eye(4)
    for t in chain:
        M = t.matrix(k) @ M
    return M


class Transformations:
    """NXtransformations of one open file: reads transformation datasets and follows
    ``depends_on`` chains. Warnings go to ``warnings``; ``path`` is used in messages."""

    def __init__(self, f: h5py.File, path: Path, warnings: list[str]):
        self.f, self.path, self.warnings = f, path, warnings
        self._index: list[tuple[str, str]] | None = None

    def index(self) -> list[tuple[str, str]]:
        """(name, absolute path) of every dataset under /entry with a transformation_type."""
        if self._index is None:
            found: list[tuple[str, str]] = []

            def visit(name, obj):
                if isinstance(obj, h5py.Dataset) and "transformation_type" in obj.attrs:
                    found.append((name.rsplit("/", 1)[-1], "/" + name))

            self.f["entry"].visititems(lambda n, o: visit("entry/" + n, o))
            self._index = found
        return self._index

    def resolve(self, ref: str, group: str, who: str) -> h5py.Dataset:
        """Dataset named by a depends_on reference (absolute or relative to ``group``).

        Real files sometimes point at a path that does not exist while the transformation is
        stored elsewhere under the same name (e.g. DLS ``/entry/sample/transformations/phi``
        vs ``/entry/sample/sample_phi/phi``): then the unique transformation dataset with that
        name, preferring the longest common path prefix, is used and a warning recorded.
        """
        full = ref if ref.startswith("/") else f"{group.rstrip('/')}/{ref}"
        obj = self.f.get(full)
        if isinstance(obj, h5py.Dataset):
            return obj
        base = full.rstrip("/").rsplit("/", 1)[-1]
        cands = [path for name, path in self.index() if name == base]
        if not cands:
            raise InputError(f"broken NXtransformations chain: {full} (depends_on of {who}) "
                             f"not found in {self.path}")

        def common(a: str, b: str) -> int:
            n = 0
            for x, y in zip(a.split("/"), b.split("/")):
                if x != y:
                    break
                n += 1
            return n

        cands.sort(key=lambda c: -common(c, full))
        if len(cands) > 1 and common(cands[0], full) == common(cands[1], full):
            raise InputError(f"broken NXtransformations chain: {full} not found and the name "
                             f"'{base}' is ambiguous in {self.path}")
        self.warnings.append(f"depends_on target {full} not found; using {cands[0]}")
        return self.f[cands[0]]

    def read(self, ds: h5py.Dataset) -> Transform:
        """One transformation dataset (values in m or deg, offset in m, unit vector)."""
        p = self.path
        ttype = (attr_str(ds, "transformation_type", "") or "").lower()
        if ttype not in ("translation", "rotation"):
            raise InputError(f"{ds.name}: transformation_type '{ttype}' is not translation or "
                             f"rotation in {p}")
        if "vector" not in ds.attrs:
            raise InputError(f"{ds.name}: transformation without a 'vector' attribute in {p}")
        vec = np.asarray(ds.attrs["vector"], dtype=np.float64).ravel()
        if vec.size != 3 or not np.all(np.isfinite(vec)) or np.linalg.norm(vec) == 0:
            raise InputError(f"{ds.name}: invalid 'vector' attribute {vec.tolist()} in {p}")
        vec = vec / np.linalg.norm(vec)
        units = attr_str(ds, "units")
        values = np.asarray(ds[()], dtype=np.float64).ravel()
        if values.size == 0:
            values = np.zeros(1)
        if ttype == "rotation":
            values = values * angle_factor(units, ds.name, p)
            off_unit = attr_str(ds, "offset_units", "m")
        else:
            values = values * length_factor(units, ds.name, p)
            off_unit = attr_str(ds, "offset_units", units or "m")
        offset = np.zeros(3)
        if "offset" in ds.attrs:
            offset = np.asarray(ds.attrs["offset"], dtype=np.float64).ravel()
            if offset.size != 3:
                raise InputError(f"{ds.name}: invalid 'offset' attribute in {p}")
            offset = offset * length_factor(off_unit, ds.name + "@offset", p)
        dep = attr_str(ds, "depends_on", ".") or "."
        return Transform(ds.name, ttype, vec, offset, values, dep, ds.parent.name)

    def chain(self, ref: str, group: str, who: str) -> list[Transform]:
        """Transformations from ``ref`` (innermost) to the end of the chain (outermost)."""
        chain: list[Transform] = []
        seen: set[str] = set()
        while ref and ref.strip() != ".":
            ds = self.resolve(ref.strip(), group, who)
            if ds.name in seen or len(chain) > 64:
                raise InputError(f"circular NXtransformations chain at {ds.name} in {self.path}")
            seen.add(ds.name)
            t = self.read(ds)
            chain.append(t)
            who, ref, group = t.path, t.depends_on, t.group
        return chain

    def increment_set(self, t: Transform) -> float | None:
        """``<name>_increment_set`` (deg) next to ``t`` or in /entry/sample/transformations."""
        name = t.path.rsplit("/", 1)[-1] + "_increment_set"
        for g in (t.group, "/entry/sample/transformations"):
            grp = self.f.get(g)
            if isinstance(grp, h5py.Group) and name in grp:
                ds = grp[name]
                return read_scalar(ds) * angle_factor(attr_str(ds, "units", "deg"), ds.name,
                                                      self.path)
        return None

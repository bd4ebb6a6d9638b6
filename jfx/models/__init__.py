"""Typed data that flows between pipeline stages: immutable pytrees (geometry, lattice, spots,
reflections) and the host-side result types (per-image statistics, merged reflections and
merging statistics); pixel-value conventions of a frame dtype (:mod:`jfx.models.pixels`);
cell ↔ basis (:mod:`jfx.models.cell`, numpy only).

The re-exports below load on first use (PEP 562, as :func:`jfx.lazy.lazy_exports`; models
import nothing of jfx): the numpy-only modules are importable without JAX.
"""

import importlib as _importlib

_EXPORTS = {
    "Beam": "jfx.models.geometry",
    "Detector": "jfx.models.geometry",
    "Geometry": "jfx.models.geometry",
    "Goniometer": "jfx.models.geometry",
    "ImageStats": "jfx.models.images",
    "Lattice": "jfx.models.lattice",
    "MergedReflections": "jfx.models.merged",
    "MergingStatistics": "jfx.models.merged",
    "ReflectionFlag": "jfx.models.reflections",
    "Reflections": "jfx.models.reflections",
    "SpotList": "jfx.models.spots",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__

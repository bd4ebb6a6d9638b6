"""Frozen-dataclass pytrees.

``@pytree_dataclass`` turns a class into a frozen :mod:`dataclasses` dataclass registered
with :func:`jax.tree_util.register_dataclass`. Fields declared with :func:`static` are
metadata (hashable, part of the treedef: changing them recompiles); every other field is a
pytree child (arrays or nested pytrees). Changes go through :func:`dataclasses.replace`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import jax


T = TypeVar("T")


def static(default: Any = dataclasses.MISSING, **kwargs: Any) -> Any:
    """A dataclass field that is static metadata (not traced by JAX)."""
    metadata = dict(kwargs.pop("metadata", {}) or {})
    metadata["static"] = True
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=metadata, **kwargs)
    return dataclasses.field(default=default, metadata=metadata, **kwargs)


def pytree_dataclass(cls: type[T]) -> type[T]:
    """Make ``cls`` a frozen dataclass and register it as a JAX pytree."""
    cls = dataclasses.dataclass(frozen=True)(cls)
    fields = dataclasses.fields(cls)
    data = [f.name for f in fields if not f.metadata.get("static", False)]
    meta = [f.name for f in fields if f.metadata.get("static", False)]
    return jax.tree_util.register_dataclass(cls, data_fields=data, meta_fields=meta)


def replace(obj: T, **changes: Any) -> T:
    """Return a copy of a pytree dataclass with some fields replaced."""
    return dataclasses.replace(obj, **changes)

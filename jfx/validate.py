"""Settings validation shared by every settings class (pure: no Hydra, no I/O).

:class:`Settings` is the base of the settings dataclasses: one generic ``__post_init__``
converts and range-checks every field from its type and its :func:`setting` metadata.
Each ``as_*`` converts one value and raises a one-line :class:`ValueError` naming the
option when it is out of range; the CLI turns that into exit code 2.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


def as_float(name: str, value: Any, *, minimum: float | None = None, positive: bool = False,
             maximum: float | None = None, allow_none: bool = False) -> float | None:
    """``value`` as a finite float, checked against bounds; one-line ValueError otherwise."""
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} is required")
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum:g}, got {value!r}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum:g}, got {value!r}")
    return v


def as_int(name: str, value: Any, *, minimum: int | None = None,
           allow_none: bool = False) -> int | None:
    """``value`` as an int (integral floats accepted) ≥ ``minimum``; ValueError otherwise."""
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} is required")
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}") from None
    if not math.isfinite(f) or f != int(f):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(f)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return v


def as_bool(name: str, value: Any) -> bool:
    """``value`` as a bool (true/false, yes/no, 1/0 accepted)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.lower() in ("true", "yes", "1")
    raise ValueError(f"{name} must be true or false, got {value!r}")


def as_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` lower-cased, which must be one of ``choices``."""
    v = str(value).lower() if value is not None else None
    if v not in choices:
        raise ValueError(f"{name} must be one of {'|'.join(choices)}, got {value!r}")
    return v


def as_floats(name: str, value: Any, n: int | None = None,
              allow_none: bool = False) -> tuple[float, ...] | None:
    """``value`` (a sequence, or a comma-separated string) as a tuple of finite floats."""
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} is required")
    if isinstance(value, str):
        value = [v for v in value.replace(" ", ",").split(",") if v]
    if not isinstance(value, Sequence):
        value = [value]
    out = tuple(as_float(name, v) for v in value)
    if n is not None and len(out) != n:
        raise ValueError(f"{name} must be {n} comma-separated numbers, got {len(out)}")
    return out


def as_str(name: str, value: Any, allow_none: bool = False) -> str | None:
    if value is None:
        if allow_none:
            return None
        raise ValueError(f"{name} is required")
    if isinstance(value, (list, tuple, dict)):
        raise ValueError(f"{name} must be a string, got {value!r}")
    return str(value)


# --------------------------------------------------------------------------- settings base
def setting(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
            label: str | None = None, minimum: float | None = None,
            maximum: float | None = None, positive: bool = False,
            choices: Sequence[str] | None = None, error: str | None = None,
            config: bool = True) -> Any:
    """A settings field: its default and the checks of its value (``dataclasses.field``).

    Args:
        default, default_factory: the default (the ONE place it is written).
        label: name of the option in error messages (default ``<config_node>.<field>``).
        minimum, maximum, positive: range of a number (``positive``: > 0).
        choices: allowed values of a string (case-insensitive; stored lower-case).
        error: message of a value that cannot be converted (``"<error>, got <value>"``).
        config: False for a field the program sets itself (not a config key).
    """
    meta = {k: v for k, v in (("label", label), ("minimum", minimum), ("maximum", maximum),
                              ("choices", tuple(choices) if choices else None),
                              ("error", error)) if v is not None}
    if positive:
        meta["positive"] = True
    if not config:
        meta["config"] = False
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


_HINTS: dict[type, dict[str, Any]] = {}


def _type_hints(cls: type) -> dict[str, Any]:
    hints = _HINTS.get(cls)
    if hints is None:
        try:
            hints = typing.get_type_hints(cls)
        except Exception:  # noqa: BLE001 - unresolvable annotations: values pass unchecked
            hints = {}
        _HINTS[cls] = hints
    return hints


def _optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, whether None is allowed) of ``X | None``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and len(rest) < len(args):
            return rest[0], True
    return tp, False


def _sequence(value: Any) -> list[Any]:
    if isinstance(value, str):
        return [v for v in value.replace(" ", ",").split(",") if v]
    if isinstance(value, Sequence):
        return list(value)
    return [value]


def convert(label: str, value: Any, tp: Any, meta: Mapping[str, Any] | None = None) -> Any:
    """``value`` converted to the annotated type ``tp`` and checked against ``meta``
    (see :func:`setting`); one-line ValueError naming ``label`` otherwise.

    Handles bool, int, float, str (with ``choices``), ``X | None``, ``tuple[float, ...]``,
    ``tuple[float, float, float]``, ``tuple[str, ...]``, ``tuple[int, ...]`` and nested
    settings dataclasses (from a mapping); other types pass unchanged.
    """
    meta = meta or {}
    inner, optional = _optional(tp)
    if value is None and optional:
        return None
    lo, hi, pos = meta.get("minimum"), meta.get("maximum"), bool(meta.get("positive"))
    if inner is bool:
        return as_bool(label, value)
    if inner is int:
        v = as_int(label, value, minimum=lo)
        if hi is not None and v > hi:
            raise ValueError(f"{label} must be <= {hi}, got {value!r}")
        return v
    if inner is float:
        return as_float(label, value, minimum=lo, maximum=hi, positive=pos)
    if inner is str:
        if meta.get("choices"):
            return as_choice(label, value, meta["choices"])
        return as_str(label, value)
    if typing.get_origin(inner) is tuple:
        args = typing.get_args(inner)
        n = None if (not args or args[-1] is Ellipsis) else len(args)
        elem = args[0] if args else Any
        if value is None:
            value = ()
        if elem is float:
            return as_floats(label, value, n)
        items = [value] if isinstance(value, str) and elem is str else _sequence(value)
        if n is not None and len(items) != n:
            raise ValueError(f"{label} must be {n} values, got {len(items)}")
        if elem is int:
            return tuple(as_int(label, v, minimum=lo) for v in items)
        if elem is str:
            return tuple(as_str(label, v) for v in items)
        return tuple(items)
    if isinstance(inner, type) and dataclasses.is_dataclass(inner):
        if value is None:
            return inner()
        if isinstance(value, inner):
            return value
        if not isinstance(value, Mapping):
            raise ValueError(f"{label} must be a mapping of settings, got {value!r}")
        names = {f.name for f in dataclasses.fields(inner) if f.init}
        unknown = sorted(str(k) for k in value if k not in names)
        if unknown:
            raise ValueError(f"unknown {label} setting(s): {', '.join(unknown)}")
        return inner(**dict(value))
    return value


class Settings:
    """Base of the settings dataclasses: ONE ``__post_init__`` converts and checks every field
    from its annotated type and its :func:`setting` metadata, then runs :meth:`validate`
    (checks between fields). Subclasses are (frozen) dataclasses and write each default once,
    in the field; the config schema is derived from the fields (:func:`config_defaults`).

    ``config_node`` prefixes the default error label of a field (``azint.low_q_invA``).
    """

    config_node: ClassVar[str] = ""

    def __post_init__(self) -> None:
        cls = type(self)
        hints = _type_hints(cls)
        prefix = f"{cls.config_node}." if cls.config_node else ""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            tp = hints.get(f.name)
            if tp is None or typing.get_origin(tp) is ClassVar:
                continue
            old = getattr(self, f.name)
            label = f.metadata.get("label") or f"{prefix}{f.name}"
            try:
                new = convert(label, old, tp, f.metadata)
            except ValueError:
                if "error" in f.metadata:
                    raise ValueError(f"{f.metadata['error']}, got {old!r}") from None
                raise
            if new is not old:
                object.__setattr__(self, f.name, new)
        self.validate()

    def validate(self) -> None:
        """Checks between fields (override; raise a one-line ValueError)."""

    def _replace_field(self, name: str, value: Any) -> None:
        """Set a field of this frozen instance from :meth:`validate` (normalisation)."""
        object.__setattr__(self, name, value)


def config_defaults(cls: type) -> dict[str, Any]:
    """The config keys of a settings dataclass with their defaults (plain YAML values:
    tuples as lists, nested settings as mappings); fields with ``config=False`` and
    ``init=False`` are not keys. This is the schema of a config-group option."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init or not f.metadata.get("config", True):
            continue
        if f.default is not dataclasses.MISSING:
            v = f.default
        elif f.default_factory is not dataclasses.MISSING:
            v = f.default_factory()
        else:
            v = "???"  # mandatory (omegaconf's MISSING)
        out[f.name] = _plain(v)
    return out


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)
                if f.init and f.metadata.get("config", True)}
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    return v

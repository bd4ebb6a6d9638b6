"""Value validators shared by the settings classes (pure: no Hydra, no I/O).

Each ``as_*`` converts a config value and raises a one-line :class:`ValueError` naming the
option when it is out of range; the CLI turns that into exit code 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


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

"""The state file of one part of a launched run (``<prefix>_parts/part<K>/state.pkl``): the
part's final :class:`jfx.pipeline.state.ProcessState` (host numpy) with the fingerprint of
the job it belongs to, so that ``launcher.resume=true`` reuses it only for the same input,
settings and split. Written atomically (a temporary file renamed into place): a part that
died leaves no state file."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

FORMAT = "jfx-part-state-1"


def write_part_state(path: str | os.PathLike, state: Any, fingerprint: str,
                     info: dict | None = None) -> Path:
    """Write ``state`` with its job ``fingerprint`` (and a small ``info`` dict) to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        pickle.dump({"format": FORMAT, "fingerprint": fingerprint, "info": info or {},
                     "state": state}, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_part_state(path: str | os.PathLike, fingerprint: str | None = None
                    ) -> tuple[Any, dict] | None:
    """``(state, info)`` of a part state file, or None when it is missing, unreadable, of
    another format or (``fingerprint`` given) of another job."""
    try:
        with open(path, "rb") as f:
            d = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError,
            ModuleNotFoundError, TypeError, ValueError):
        return None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        return None
    if fingerprint is not None and d.get("fingerprint") != fingerprint:
        return None
    return d["state"], dict(d.get("info") or {})

"""The worked example of docs/scaling.md (a new partiality model) runs and recovers γ."""

from __future__ import annotations

import contextlib
import io
import re
import sys
import types
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "scaling.md"


def test_docs_partiality_example_refines_gamma():
    code = re.search(r"```python\n(.*?)```", DOC.read_text(), re.S).group(1)
    mod = types.ModuleType("jfx_docs_scaling_example")  # dataclasses need a real module
    sys.modules[mod.__name__] = mod
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            exec(compile(code, str(DOC), "exec"), mod.__dict__)  # noqa: S102 (our docs)
    finally:
        del sys.modules[mod.__name__]
    gamma = mod.gamma
    assert abs(gamma - 3e-4) < 0.1 * 3e-4
    assert "refined gamma" in buf.getvalue()

"""No module keeps a JAX array at module level.

The stage packages load lazily (``jfx.lazy``), so a module may first be imported while a
function is being traced by ``jax.jit``; a JAX value created at import time is then a tracer
that leaks out of the trace (``jfjoch_scale`` failed with UnexpectedTracerError in a fresh
process because ``jfx.physics.partiality`` built a constant with ``jnp``). Module-level
constants must be Python or numpy values."""

from __future__ import annotations

import importlib
import pkgutil

import jax

import jfx


def test_no_module_level_jax_arrays():
    found = []
    for info in pkgutil.walk_packages(jfx.__path__, "jfx."):
        mod = importlib.import_module(info.name)
        for name, value in vars(mod).items():
            if isinstance(value, jax.Array):
                found.append(f"{info.name}.{name}")
    assert found == []

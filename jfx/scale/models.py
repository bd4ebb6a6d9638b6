"""Scale models: per-image scale G_i and optional per-image B-factor.

g = G_i · exp(−2 B_i s²), s² = 1/(4d²) (the usual relative Debye–Waller form, e.g. Evans
2006, Acta Cryst. D62, 72 — Aimless/SCALA; Kabsch 2010 — XDS CORRECT). G is parameterised
as ln G so that it stays positive.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from jfx.scale.base import Params, ScaleModel
from jfx.scale.observations import Observations


@dataclasses.dataclass(frozen=True)
class ImageScale(ScaleModel):
    """Per-image ln G (always free) and B (Å², free only with ``refine_bfactor``/``-B``)."""

    refine_bfactor: bool = False

    def init_params(self, obs: Observations) -> Params:
        return {"global": {},
                "image": {"lnG": jnp.zeros((obs.n_img,), jnp.float64),
                          "B": jnp.zeros((obs.n_img,), jnp.float64)}}

    def __call__(self, params: Params, obs: Observations) -> jnp.ndarray:
        p = params["image"]
        return jnp.exp(p["lnG"][obs.image] - 2.0 * p["B"][obs.image] * obs.s2)

    def free(self, settings: Any = None) -> Params:
        b = self.refine_bfactor if settings is None else bool(settings.refine_bfactor)
        return {"global": {}, "image": {"lnG": True, "B": b}}

    def fix_gauge(self, params: Params, image_ok: Any) -> Params:
        """Mean ln G = 0 and mean B = 0 over images with observations (both are degenerate
        with the merged intensities: a common G or B is absorbed by I_hkl)."""
        ok = jnp.asarray(image_ok)
        n = jnp.maximum(jnp.sum(ok), 1)
        p = dict(params["image"])
        for k in ("lnG", "B"):
            m = jnp.sum(jnp.where(ok, p[k], 0.0)) / n
            p[k] = jnp.where(ok, p[k] - m, 0.0)
        return {"global": params["global"], "image": p}

    def describe(self, params: Params) -> dict[str, Any]:
        p = params["image"]
        return {"scale": np.exp(np.asarray(p["lnG"])), "bfactor": np.asarray(p["B"])}

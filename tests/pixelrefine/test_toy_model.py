"""A spot-profile model added from outside jfx by one class and one YAML file
(docs/extending.md, docs/pixelrefine.md): composed, instantiated and fitted."""

from __future__ import annotations

import dataclasses
import math

import jax
import numpy as np

from jfx.config import compose, process_settings
from jfx.pixelrefine.components import SpotProfile
from jfx.pixelrefine.fit import fit_batch, still_params
from jfx.pixelrefine.stills import bucket, pack
from jfx.validate import setting

from .conftest import FILE_BANDWIDTH, SYSTEM, TRUE, prepare_still


@dataclasses.dataclass(frozen=True)
class RoundProfile(SpotProfile):
    """A round Gaussian spot (no radial stretch), pixel-integrated approximately."""

    name = "round"
    sigma_px: float = setting(1.2, positive=True)

    def init_params(self, bandwidth_fwhm):
        return {"log_sigma_px": math.log(self.sigma_px)}

    def tangential_sigma_px(self, params):
        import jax.numpy as jnp

        return jnp.exp(params["log_sigma_px"])

    def __call__(self, params, dx, dy, radial, two_theta):
        import jax.numpy as jnp

        v = jnp.exp(2 * params["log_sigma_px"]) + 1.0 / 12.0
        return jnp.exp(-0.5 * (dx * dx + dy * dy) / v) / (2 * jnp.pi * v)


def test_profile_model_from_outside_jfx_by_config(tmp_path, stills):
    (tmp_path / "pixel_profile").mkdir()
    (tmp_path / "pixel_profile" / "round.yaml").write_text(
        "defaults:\n  - round_schema\n  - _self_\n\n"
        f"_target_: {RoundProfile.__module__}.RoundProfile\nsigma_px: 1.5\n")
    cfg = compose("process", ["pixel_profile=round", "refine=pixelrefine",
                              f"scale.reference_mtz={tmp_path / 'pixel_profile' / 'round.yaml'}"],
                  config_dirs_extra=[tmp_path])
    s = process_settings(cfg)
    prof = s.pixel_profile
    assert type(prof).__name__ == "RoundProfile" and prof.sigma_px == 1.5
    geo, lookup, sts, _ = stills
    preps = [prepare_still(geo, st, lookup, max_fit=128) for st in sts[:2]]
    d = pack(preps, 2, bucket(max(len(p.fit_rows) for p in preps)), "fit")
    p0 = jax.tree_util.tree_map(lambda *a: np.stack(a), *[
        still_params(p.cell_u, s.pixel_partiality, prof, FILE_BANDWIDTH) for p in preps])
    p, cost, conv, it, sig, _ = fit_batch(p0, d, partiality=s.pixel_partiality, profile=prof,
                                          system=SYSTEM)
    assert np.all(np.asarray(conv))
    # the round model's width lies between the true tangential (0.9 px) and radial widths
    sig_px = np.exp(np.asarray(p["profile"]["log_sigma_px"]))
    assert np.all((sig_px > 0.8 * TRUE["sigma_px"]) & (sig_px < 1.4 * TRUE["sigma_px"]))
    assert np.all(np.abs(np.exp(np.asarray(p["scale"]["log_g"])) / TRUE["scale"] - 1) < 0.2)

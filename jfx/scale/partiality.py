"""Partiality models for scaling (``-P fixed | rot | unity``).

* :class:`FixedPartiality` (``-P fixed``): the partiality stored at integration time, no
  free parameters.
* :class:`UnityPartiality` (``-P unity``): P = 1.
* :class:`RotationPartiality` (``-P rot``): rotation rows follow the Gaussian rocking curve of
  Kabsch (1988, J. Appl. Cryst. 21, 916; 2010, Acta Cryst. D66, 125 — XDS): the fraction of a
  reflection centred at φc recorded over the summed frames [φ_lo, φ_hi] is
  P = ½[erf(|ζ|(φ_hi − φc)/(√2σ_M)) − erf(|ζ|(φ_lo − φc)/(√2σ_M))], with a refinable global
  mosaicity σ_M (log-parameterised) and an optional per-image wedge w_i (deg): φ_hi = φ_lo +
  frames·w_i for the reflection's centroid image (default w = the scan increment; refined with
  ``-w``, start ``-w=v``). Still rows use the still limit of the same model, the Ewald-offset
  Gaussian exp(−ε²/2σ_ε²) with σ_ε(q = 1/d, 2θ, λ, σ_M, bandwidth) (Kabsch 2014, Acta Cryst.
  D70, 2204 — nXDS; :func:`jfx.physics.partiality.still_sigma_eps`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np

from jfx.physics.partiality import rotation_fraction, still_partiality, still_sigma_eps
from jfx.scale.base import Params, PartialityModel, all_fixed, empty_params
from jfx.scale.observations import Observations
from jfx.scale.settings import PartialitySettings


@dataclasses.dataclass(frozen=True)
class FixedPartiality(PartialityModel):
    """The integration-time partiality ``obs.partiality_stored``; no parameters."""

    def init_params(self, obs: Observations) -> Params:
        return empty_params()

    def __call__(self, params: Params, obs: Observations) -> jnp.ndarray:
        return obs.partiality_stored

    def free(self, settings: Any = None) -> Params:
        return empty_params()


@dataclasses.dataclass(frozen=True)
class UnityPartiality(PartialityModel):
    """P = 1 for every observation; no parameters."""

    def init_params(self, obs: Observations) -> Params:
        return empty_params()

    def __call__(self, params: Params, obs: Observations) -> jnp.ndarray:
        return jnp.ones_like(obs.intensity)

    def free(self, settings: Any = None) -> Params:
        return empty_params()


@dataclasses.dataclass(frozen=True)
class RotationPartiality(PartialityModel):
    """Kabsch rotation partiality (rotation rows) / Ewald-offset Gaussian (still rows).

    Parameters: ``global.log_mosaicity`` = ln σ_M (σ_M in rad); ``image.wedge_deg`` (n_img,)
    per-image wedge (deg, magnitude; the sign of the scan increment is applied);
    ``image.rot_a``, ``image.rot_b`` (n_img,) small crystal rotations (rad) about two axes
    perpendicular to the beam for still rows (post-refinement of the orientation against the
    intensities, as partialator's, White et al. 2016: a still's spot positions fix the
    rotation about those axes only weakly, yet it moves every Ewald offset):
    ε' = ε + ∂ε/∂δ_a·δ_a + ∂ε/∂δ_b·δ_b (``Observations.eps_grad_a/b``).

    Attributes:
        mosaicity_deg: starting σ_M (deg).
        refine_mosaicity: σ_M is free.
        refine_wedge: per-image wedge is free (``-w``).
        wedge_start_deg: starting wedge (``-w=v``); ``None`` = |scan increment|.
        bandwidth_fwhm: relative bandwidth FWHM (stills).
        refine_orientation: per-image δ_a, δ_b are free (stills).
    """

    mosaicity_deg: float = 0.1
    refine_mosaicity: bool = True
    refine_wedge: bool = False
    wedge_start_deg: float | None = None
    bandwidth_fwhm: float = 0.0
    refine_orientation: bool = False

    def init_params(self, obs: Observations) -> Params:
        w0 = self.wedge_start_deg
        if w0 is None:
            w0 = abs(np.degrees(obs.phi_increment_rad))
        z = jnp.zeros((obs.n_img,), jnp.float64)
        return {"global": {"log_mosaicity": jnp.asarray(np.log(np.radians(self.mosaicity_deg)))},
                "image": {"wedge_deg": jnp.full((obs.n_img,), float(w0), jnp.float64),
                          "rot_a": z, "rot_b": z}}

    def __call__(self, params: Params, obs: Observations) -> jnp.ndarray:
        sig_m = jnp.exp(params["global"]["log_mosaicity"])
        img = params["image"]
        w = img["wedge_deg"][obs.image]
        sgn = 1.0 if obs.phi_increment_rad >= 0 else -1.0
        phi_hi = obs.phi_lo_rad + obs.frames * sgn * jnp.radians(w)
        p_rot = rotation_fraction(obs.phi_c_rad, obs.zeta, sig_m, obs.phi_lo_rad, phi_hi)
        sig_eps = still_sigma_eps(1.0 / obs.d_A, obs.two_theta_rad, obs.wavelength_A, sig_m,
                                  self.bandwidth_fwhm)
        eps = obs.eps_invA
        if "rot_a" in img:  # parameter sets written without the orientation leaves work too
            eps = (eps + obs.eps_grad_a * img["rot_a"][obs.image]
                   + obs.eps_grad_b * img["rot_b"][obs.image])
        p_still = still_partiality(eps, sig_eps)
        return jnp.where(obs.is_still, p_still, p_rot)

    def free(self, settings: Any = None) -> Params:
        wedge = self.refine_wedge if settings is None else bool(settings.refine_wedge)
        o = bool(self.refine_orientation)
        return {"global": {"log_mosaicity": bool(self.refine_mosaicity)},
                "image": {"wedge_deg": wedge, "rot_a": o, "rot_b": o}}

    def describe(self, params: Params) -> dict[str, Any]:
        return {"mosaicity_deg": float(np.degrees(np.exp(float(
                    params["global"]["log_mosaicity"])))),
                "wedge_deg": np.asarray(params["image"]["wedge_deg"]),
                "rot_a": np.asarray(params["image"]["rot_a"]),
                "rot_b": np.asarray(params["image"]["rot_b"])}


PARTIALITY_CLASSES = {"fixed": FixedPartiality, "unity": UnityPartiality,
                      "rot": RotationPartiality}


def make_partiality(settings: PartialitySettings | str, **kw: Any) -> PartialityModel:
    """Partiality model for ``settings.model`` (``fixed`` | ``rot`` | ``unity``).

    Keyword arguments go to :class:`RotationPartiality` (``mosaicity_deg``, ``refine_wedge``,
    ``wedge_start_deg``, ``bandwidth_fwhm``, ``refine_mosaicity``, ``refine_orientation``); they are ignored by the
    parameter-free models. A :class:`jfx.scale.settings.ScaleSettings` may be passed as
    ``scale_settings=`` to take ``refine_wedge``/``wedge_start_deg`` from it.
    """
    name = settings if isinstance(settings, str) else settings.model
    if name not in PARTIALITY_CLASSES:
        raise ValueError(f"unknown partiality model {name!r} (known: fixed, rot, unity)")
    sc = kw.pop("scale_settings", None)
    if name != "rot":
        return PARTIALITY_CLASSES[name]()
    if sc is not None:
        kw.setdefault("refine_wedge", bool(sc.refine_wedge))
        kw.setdefault("wedge_start_deg", sc.wedge_start_deg)
    if kw.get("bandwidth_fwhm") is None:
        kw.pop("bandwidth_fwhm", None)
    return RotationPartiality(**kw)


__all__ = [
    "FixedPartiality",
    "RotationPartiality",
    "UnityPartiality",
    "all_fixed",
    "make_partiality",
]

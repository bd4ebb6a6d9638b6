"""Scale models (config group ``scale_model``).

* :class:`ImageScale` (``image``): per-image scale G_i and optional per-image B-factor,
  g = G_i · exp(−2 B_i s²), s² = 1/(4d²) (the usual relative Debye–Waller form, e.g. Evans
  2006, Acta Cryst. D62, 72 — Aimless/SCALA; Kabsch 2010 — XDS CORRECT). G is parameterised
  as ln G so that it stays positive.
* :class:`PhysicalScale` (``physical``): the physical model of dials.scale (Beilsten-Edmands
  et al. 2020, Acta Cryst. D76, 385) and AIMLESS (Evans & Murshudov 2013, Acta Cryst. D69,
  1204): a scale and a B smooth in the rotation angle (Gaussian-smoothed knot values) and
  an absorption surface in real spherical harmonics of the reversed incident and the
  diffracted beam directions in the crystal frame.
* :class:`AutoScale` (``auto``, the default): ``physical`` for rotation data, ``image`` for
  stills.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from jfx.lazy import LazyModule
from jfx.scale.base import Params, ScaleModel
from jfx.validate import setting

if TYPE_CHECKING:
    from jfx.scale.observations import Observations

# config classes load without JAX (jfx.lazy): they are instantiated for every config check
jnp = LazyModule("jax.numpy")


def _frame_factors(params: Params, obs: Observations) -> jnp.ndarray:
    """(n, FRAME_SLOTS) exp(ln G_f − 2 B_f s²) of the frames f each row was recorded on."""
    p = params["image"]
    f = obs.frame_img
    return jnp.exp(p["lnG"][f] - 2.0 * p["B"][f] * obs.s2[:, None])


def _frame_sum(factors: jnp.ndarray, obs: Observations) -> jnp.ndarray:
    """(n,) the row's per-image factor: the frames' factors weighted by the row's share of
    photons on each (a 3D-summed rotation reflection was recorded on 1–3 frames whose
    scales differ) plus the fixed part from frames outside the fitted image."""
    return jnp.sum(obs.frame_w * factors, axis=1) + obs.frame_other


@dataclasses.dataclass(frozen=True)
class ImageScale(ScaleModel):
    """Per-image ln G (always free) and B (Å², free only with ``refine_bfactor``/``-B``).

    A rotation row recorded on several frames gets Σ_k w_k G_k exp(−2 B_k s²) over them,
    w_k its share of photons on frame k (``Observations.frame_w``); a still row its image's
    factor."""

    name = "image"
    refine_bfactor: bool = False

    def bind(self, settings: Any, obs: Observations) -> ImageScale:
        """``-B`` (``settings.refine_bfactor``)."""
        return dataclasses.replace(self, refine_bfactor=bool(settings.refine_bfactor))

    def init_params(self, obs: Observations) -> Params:
        return {"global": {},
                "image": {"lnG": jnp.zeros((obs.n_img,), jnp.float64),
                          "B": jnp.zeros((obs.n_img,), jnp.float64)}}

    def image_factors(self, params: Params, obs: Observations) -> jnp.ndarray:
        return _frame_factors(params, obs)

    def __call__(self, params: Params, obs: Observations) -> jnp.ndarray:
        return _frame_sum(_frame_factors(params, obs), obs)

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


# ----------------------------------------------------------------------------- physical
SMOOTH_REACH = 4
"""Knots within ±this many spacings of φ enter its smoothed value (the Gaussian weight of
the next one is e^−12.5 ≈ 4e−6)."""


def _grid(phi: np.ndarray, run: np.ndarray, n_runs: int, interval_rad: float
          ) -> tuple[tuple[float, float, int], ...]:
    """Per run (φ_first, spacing, n) of an even knot grid over the run's φ range with a
    spacing of at most ``interval_rad`` (≥ 2 knots; a run without rows gets one knot)."""
    out = []
    for r in range(n_runs):
        p = phi[run == r]
        if p.size == 0:
            out.append((0.0, 1.0, 1))
            continue
        lo, hi = float(p.min()), float(p.max())
        n = max(int(math.ceil((hi - lo) / interval_rad - 1e-9)) + 1, 2)
        out.append((lo, max((hi - lo) / (n - 1), 1e-6), n))
    return tuple(out)


def smooth_in_phi(coef: jnp.ndarray, grid: tuple, run: jnp.ndarray, phi: jnp.ndarray
                  ) -> jnp.ndarray:
    """Gaussian-smoothed knot values at φ: Σ_k w_k c_k / Σ_k w_k with
    w_k = exp(−½((φ − φ_k)/Δ)²) over the knots of the row's run (spacing Δ; φ is clamped
    to the run's knot range). dials.scale's smoother (Beilsten-Edmands et al. 2020).

    Args:
        coef: (Σ n_r,) knot values of all runs, run by run.
        grid: per run (φ_first, Δ, n) (:func:`_grid`, static).
        run, phi: (n,) run index and φ (rad) of the rows.
    Returns:
        (n,) float64.
    """
    first = jnp.asarray([g[0] for g in grid], jnp.float64)[run]
    step = jnp.asarray([g[1] for g in grid], jnp.float64)[run]
    n = jnp.asarray([g[2] for g in grid], jnp.int32)[run]
    off = jnp.asarray(np.cumsum([0] + [g[2] for g in grid])[:-1], jnp.int32)[run]
    t = jnp.clip((phi - first) / step, 0.0, (n - 1).astype(jnp.float64))
    k = jnp.floor(t).astype(jnp.int32)[:, None] + jnp.arange(-SMOOTH_REACH + 1,
                                                            SMOOTH_REACH + 1)[None, :]
    inside = (k >= 0) & (k < n[:, None])
    w = jnp.where(inside, jnp.exp(-0.5 * (t[:, None] - k) ** 2), 0.0)
    c = coef[jnp.clip(off[:, None] + k, 0, coef.shape[0] - 1)]
    return jnp.sum(w * c, axis=1) / jnp.maximum(jnp.sum(w, axis=1), 1e-300)


IMAGE_SCALE_CHOICES = ("none", "free", "restrained")
STILLS_REFUSED = ("scale_model=physical models rotation sweeps (a scale smooth in the rotation "
                  "angle); stills are scaled with scale_model=image or auto")
TAU_MIN = 1e-4
"""Smallest width of the per-image scale prior (``image_scale=restrained``)."""
TAU_START = TAU_MIN
"""Starting width of the per-image prior: the first cycle puts everything that is smooth in
φ into C(φ) (C and the c_i are degenerate but for the prior); the maximum-likelihood
updates then widen it as far as the images' own deviations from C need."""


def restrained_tau(x: np.ndarray, v: np.ndarray, tau0: float | None = None) -> float:
    """Maximum-likelihood width τ of per-image deviations x_i ~ N(0, τ² + v_i) (the
    Gaussian–Gaussian hierarchical model): the root of the score
    Σ (x_i² − τ² − v_i)/(τ² + v_i)² in τ² ∈ [TAU_MIN², 1], by bisection in ln τ² (the score
    falls with τ² where the data are unimodal); :data:`TAU_MIN` when the x_i scatter no
    more than their sampling variances say.

    Args:
        x: (n,) unrestrained estimates of the deviations (ln scale).
        v: (n,) their sampling variances (> 0).
        tau0: returned when no estimate is usable (default :data:`TAU_MIN`).
    Returns:
        τ ≥ :data:`TAU_MIN`.
    """
    x, v = np.asarray(x, np.float64), np.asarray(v, np.float64)
    ok = np.isfinite(x) & np.isfinite(v) & (v > 0)
    if not ok.any():
        return float(max(tau0 or TAU_MIN, TAU_MIN))
    x2, v = x[ok] ** 2, v[ok]

    def score(t2: float) -> float:
        w = t2 + v
        return float(np.sum((x2 - w) / (w * w)))

    lo, hi = 2.0 * np.log(TAU_MIN), 0.0
    if score(np.exp(lo)) <= 0.0:
        return TAU_MIN
    if score(np.exp(hi)) >= 0.0:
        return 1.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if score(np.exp(mid)) > 0.0:
            lo = mid
        else:
            hi = mid
    return float(np.exp(0.25 * (lo + hi)))


@dataclasses.dataclass(frozen=True)
class PhysicalScale(ScaleModel):
    """Physical scale model for rotation data (dials.scale's default; Beilsten-Edmands et al.
    2020, Acta Cryst. D76, 385; AIMLESS: Evans & Murshudov 2013, Acta Cryst. D69, 1204):

        g = exp(C(φ) + c_i − 2 B(φ) s² + ½ Σ_{l=1..L} Σ_m a_lm [Y_lm(−ŝ0_c) + Y_lm(ŝ1_c)]),

    C and B smooth in the rotation angle φ (:func:`smooth_in_phi`, knots every
    ``scale_interval_deg`` / ``decay_interval_deg`` per run: beam intensity, illuminated
    volume, decay with dose), c_i a scale of image i (``image_scale``), Y_lm real spherical
    harmonics (:mod:`jfx.scale.harmonics`) of the reversed incident and the diffracted beam
    in the crystal frame (absorption by the crystal and its surroundings along both paths;
    one surface per run). C, B and a_lm are global parameters, fitted jointly with the
    merged intensities eliminated (:func:`jfx.scale.fit.fit_scales`); the a_lm carry a
    Gaussian prior of standard deviation ``absorption_prior_sd`` (dials.scale restrains
    them to zero too).

    Config keys:
        scale_interval_deg: knot spacing of C(φ) (deg; dials.scale's 15°).
        decay: refine B(φ) (dials.scale's default); ``-B`` also switches it on.
        decay_interval_deg: knot spacing of B(φ) (deg; dials.scale's 20°).
        absorption_lmax: highest harmonic order L (0 = no absorption surface; dials.scale's
            4 for its default ``absorption_level``).
        absorption_prior_sd: prior standard deviation of each a_lm.
        absorption_min_range_deg: runs spanning a smaller rotation range get no absorption
            surface (dials.scale's rule for its ``auto`` model: 60°; over a short sweep the
            harmonics of −ŝ0 are smooth functions of φ like C(φ), and the ones of ŝ1 are
            poorly sampled).
        image_scale: ``none`` (c_i = 0: dials.scale's model), ``free`` (c_i free and no
            C(φ); with ``-B`` a free B per image instead of B(φ): per-image flux changes),
            ``restrained`` (C(φ) plus per-image deviations c_i ~ N(0, τ²), τ estimated from
            the data between scaling cycles by maximum likelihood, :func:`restrained_tau`:
            the per-image term is as free as the data show it needs to be).
    Rows without a beam direction (stills, a run whose lab frame is unknown) get no
    absorption term.
    """

    name = "physical"
    scale_interval_deg: float = setting(15.0, positive=True)
    decay: bool = True
    decay_interval_deg: float = setting(20.0, positive=True)
    absorption_lmax: int = setting(4, minimum=0, maximum=8)
    absorption_prior_sd: float = setting(0.2, positive=True)
    absorption_min_range_deg: float = setting(60.0, minimum=0.0)
    image_scale: str = setting("none", choices=IMAGE_SCALE_CHOICES)
    refine_bfactor: bool = setting(False, config=False)
    scale_grid: tuple = setting((), config=False)
    decay_grid: tuple = setting((), config=False)
    n_runs: int = setting(1, config=False)
    absorbing_runs: tuple = setting((), config=False)

    def bind(self, settings: Any, obs: Observations) -> PhysicalScale:
        """Knot grids over each run's φ range (valid rows), ``-B``.

        Raises:
            ValueError: still rows (a smooth function of φ is no model for them).
        """
        v = np.asarray(obs.valid)
        if np.any(np.asarray(obs.is_still)[v]):
            raise ValueError(STILLS_REFUSED)
        phi = np.asarray(obs.phi_c_rad)[v]
        run = np.asarray(obs.run)[v]
        n_runs = int(np.asarray(obs.run).max()) + 1 if obs.size else 1
        b = bool(settings.refine_bfactor) if settings is not None else self.refine_bfactor
        span = [float(np.ptp(phi[run == r])) if np.any(run == r) else 0.0
                for r in range(n_runs)]
        absorbing = tuple(sp >= math.radians(self.absorption_min_range_deg) - 1e-9
                          and self.absorption_lmax > 0 for sp in span)
        return dataclasses.replace(
            self, refine_bfactor=b, n_runs=n_runs, absorbing_runs=absorbing,
            scale_grid=_grid(phi, run, n_runs, math.radians(self.scale_interval_deg)),
            decay_grid=_grid(phi, run, n_runs, math.radians(self.decay_interval_deg)))

    @property
    def _free_images(self) -> bool:
        return self.image_scale == "free"

    @property
    def _decay(self) -> bool:
        return (self.decay or self.refine_bfactor) and not (self._free_images
                                                            and self.refine_bfactor)

    def _bound(self) -> None:
        if not self.scale_grid:
            raise ValueError("PhysicalScale must be bound to the observations (bind) first")

    def init_params(self, obs: Observations) -> Params:
        self._bound()
        n_s = sum(g[2] for g in self.scale_grid)
        n_b = sum(g[2] for g in self.decay_grid)
        K = (self.absorption_lmax + 1) ** 2 - 1
        z = jnp.zeros((obs.n_img,), jnp.float64)
        return {"global": {"C": jnp.zeros((n_s,), jnp.float64),
                           "Bphi": jnp.zeros((n_b,), jnp.float64),
                           "absorption": jnp.zeros((self.n_runs, K), jnp.float64),
                           "log_tau": jnp.asarray(np.log(TAU_START), jnp.float64)},
                "image": {"lnG": z, "B": z}}

    def free(self, settings: Any = None) -> Params:
        return {"global": {"C": not self._free_images, "Bphi": self._decay,
                           "absorption": any(self.absorbing_runs), "log_tau": False},
                "image": {"lnG": self.image_scale != "none",
                          "B": self._free_images and self.refine_bfactor}}

    def absorption(self, params: Params, obs: Observations) -> jnp.ndarray:
        """(n,) ln of the absorption term."""
        from jfx.scale.harmonics import real_harmonics

        L = self.absorption_lmax
        if L == 0 or not any(self.absorbing_runs):
            return jnp.zeros_like(obs.intensity)
        on = jnp.asarray(self.absorbing_runs, jnp.float64)[obs.run]
        a = params["global"]["absorption"][obs.run] * on[:, None]  # (n, K)
        y = 0.5 * (real_harmonics(obs.s0c, L) + real_harmonics(obs.s1c, L))
        return jnp.sum(a * y, axis=-1)

    def image_factors(self, params: Params, obs: Observations) -> jnp.ndarray | None:
        return None if self.image_scale == "none" else _frame_factors(params, obs)

    def __call__(self, params: Params, obs: Observations) -> jnp.ndarray:
        self._bound()
        g = params["global"]
        ln = jnp.zeros_like(obs.intensity)
        if not self._free_images:
            ln = smooth_in_phi(g["C"], self.scale_grid, obs.run, obs.phi_c_rad)
        if self._decay:
            ln = ln - 2.0 * smooth_in_phi(g["Bphi"], self.decay_grid, obs.run,
                                          obs.phi_c_rad) * obs.s2
        out = jnp.exp(ln + self.absorption(params, obs))
        if self.image_scale != "none":
            out = out * _frame_sum(_frame_factors(params, obs), obs)
        return out

    def prior_residuals(self, params: Params) -> jnp.ndarray:
        return jnp.ravel(params["global"]["absorption"]) / self.absorption_prior_sd

    def image_prior_residuals(self, params: Params) -> jnp.ndarray | None:
        if self.image_scale != "restrained":
            return None
        return params["image"]["lnG"] / jnp.exp(params["global"]["log_tau"])

    def update_hyperparameters(self, params: Params, fit: Any, obs: Observations) -> Params:
        """``restrained``: τ re-estimated (:func:`restrained_tau`) from the unrestrained
        estimates x_i = c_i + v_i Σ w m_i' (I − m) of the image deviations (one Gauss–Newton
        step from the fit without the prior; m = gP·I_hkl, w = weight/σ², m_i' = ∂m/∂c_i =
        m × the row's share from frame i) and their sampling variances
        v_i = 1/Σ w m_i'² (1 − h), h the row's leverage in its reflection's merge."""
        if self.image_scale != "restrained":
            return params
        w = np.asarray(fit.obs_weight) / np.asarray(fit.obs_sigma) ** 2
        m = fit.obs_scale * fit.obs_partiality * np.nan_to_num(
            np.asarray(fit.intensity))[np.asarray(obs.refl)]
        # ∂m/∂c_f = m · (share of the row's image factor from frame f)
        F = np.asarray(obs.frame_w) * np.exp(np.asarray(params["image"]["lnG"]))[
            np.asarray(obs.frame_img)]
        share = F / np.maximum(F.sum(axis=1, keepdims=True), 1e-300)
        # information about c_i with the merged intensities eliminated: a row weighs
        # w m² (1 − h), h its leverage in its reflection's merge (a reflection measured
        # once says nothing about the scale)
        wm2 = w * m * m
        refl = np.asarray(obs.refl)
        den = np.bincount(refl, wm2, minlength=obs.n_refl)[refl]
        h = np.where(den > 0, wm2 / np.where(den > 0, den, 1.0), 1.0)
        fi = np.asarray(obs.frame_img).reshape(-1)
        info = np.bincount(fi, ((wm2 * (1.0 - h))[:, None] * share ** 2).reshape(-1),
                           minlength=obs.n_img)
        grad = np.bincount(fi, ((w * m * (np.asarray(obs.intensity) - m))[:, None]
                                * share).reshape(-1), minlength=obs.n_img)
        ok = fit.image_ok & (info > 0)
        tau = float(np.exp(float(params["global"]["log_tau"])))
        v = 1.0 / np.where(ok, info, 1.0)
        # the unrestrained estimate of c_i (one Gauss-Newton step without the prior)
        x = np.asarray(params["image"]["lnG"]) + grad * v
        tau = restrained_tau(x[ok], v[ok], tau)
        g = dict(params["global"])
        g["log_tau"] = jnp.asarray(np.log(tau), jnp.float64)
        return {"global": g, "image": params["image"]}

    def fix_gauge(self, params: Params, image_ok: Any) -> Params:
        """Mean knot value of C and of B(φ) = 0 (one shift for all runs); ``free``: mean
        c_i = 0 and mean B_i = 0 as :class:`ImageScale`; ``restrained``: c_i are held by
        their prior."""
        g = dict(params["global"])
        for k in ("C", "Bphi"):
            g[k] = g[k] - jnp.mean(g[k]) if g[k].shape[0] else g[k]
        p = params["image"]
        if self._free_images:
            p = ImageScale.fix_gauge(ImageScale(), params, image_ok)["image"]
        return {"global": g, "image": p}

    def summary(self, params: Params, obs: Observations) -> str:
        v = np.asarray(obs.valid)
        parts = []
        if not self._free_images:
            c = np.exp(np.asarray(params["global"]["C"]))
            parts.append(f"scale {c.size} knots, {c.min():.3f}..{c.max():.3f}")
        if self.image_scale == "restrained":
            tau = float(np.exp(float(params["global"]["log_tau"])))
            parts.append(f"per-image deviations tau {100 * tau:.2f}%")
        elif self._free_images:
            parts.append("scale per image" + (" with B" if self.refine_bfactor else ""))
        if self._decay:
            b = np.asarray(params["global"]["Bphi"])
            parts.append(f"B(phi) {b.min():.2f}..{b.max():.2f} A^2")
        if self.absorption_lmax > 0 and not any(self.absorbing_runs):
            parts.append(f"no absorption surface (rotation range < "
                         f"{self.absorption_min_range_deg:g} deg)")
        elif self.absorption_lmax > 0:
            a = np.exp(np.asarray(self.absorption(params, obs))[v])
            has = (np.asarray(obs.s1c_x)[v] != 0) | (np.asarray(obs.s1c_z)[v] != 0)
            if has.any():
                a = a[has]
                parts.append(f"absorption L={self.absorption_lmax} on {int(has.sum())} rows: "
                             f"{a.min():.3f}..{a.max():.3f} (rms {100 * np.std(a):.1f}%)")
            else:
                parts.append("absorption: no beam directions (lab frame unknown)")
        return f"scale model {self.name} (image scale {self.image_scale}): " + "; ".join(parts)

    def image_values(self, params: Params, obs: Observations) -> dict[str, np.ndarray]:
        """Per image (n_img,): ``scale`` exp(C(φ_i) + c_i) and ``bfactor`` B(φ_i) (or B_i),
        φ_i the mean φ of the image's valid rows; without the absorption term, which
        differs between the rows of an image."""
        v = np.asarray(obs.valid)
        img = np.asarray(obs.image)[v]
        cnt = np.bincount(img, minlength=obs.n_img)
        phi = np.bincount(img, np.asarray(obs.phi_c_rad)[v], minlength=obs.n_img)
        phi = np.where(cnt > 0, phi / np.maximum(cnt, 1), 0.0)
        run = np.zeros(obs.n_img, np.int64)
        run[img] = np.asarray(obs.run)[v]
        g, p = params["global"], params["image"]
        ln = np.zeros(obs.n_img)
        b = np.zeros(obs.n_img)
        if not self._free_images:
            ln += np.asarray(smooth_in_phi(g["C"], self.scale_grid, jnp.asarray(run),
                                           jnp.asarray(phi)))
        if self.image_scale != "none":
            ln += np.asarray(p["lnG"])
            b += np.asarray(p["B"])
        if self._decay:
            b += np.asarray(smooth_in_phi(g["Bphi"], self.decay_grid, jnp.asarray(run),
                                          jnp.asarray(phi)))
        return {"scale": np.exp(ln), "bfactor": b}

    def describe(self, params: Params) -> dict[str, Any]:
        g, p = params["global"], params["image"]
        out: dict[str, Any] = {"absorption_coefficients": np.asarray(g["absorption"]),
                               "scale_knots": np.exp(np.asarray(g["C"])),
                               "bfactor_knots": np.asarray(g["Bphi"])}
        return out


@dataclasses.dataclass(frozen=True)
class AutoScale(PhysicalScale):
    """The default (``scale_model=auto``): for rotation data :class:`PhysicalScale` with
    these keys, whose default differs in ``image_scale`` (``restrained``); :class:`ImageScale`
    (``-B`` per image) when any row is a still. Measured on the anomalous sweeps of issue 17
    (docs/scaling.md, "Scale models")."""

    name: ClassVar[str] = "auto"
    image_scale: str = setting("restrained", choices=IMAGE_SCALE_CHOICES)

    def bind(self, settings: Any, obs: Observations) -> ScaleModel:
        v = np.asarray(obs.valid)
        if not v.any() or np.any(np.asarray(obs.is_still)[v]):
            return ImageScale().bind(settings, obs)
        phys = PhysicalScale(**{f.name: getattr(self, f.name)
                                for f in dataclasses.fields(PhysicalScale)
                                if f.metadata.get("config", True)})
        return phys.bind(settings, obs)

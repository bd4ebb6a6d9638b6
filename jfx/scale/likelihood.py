"""Likelihoods for scaling (config group ``likelihood``): Gaussian (weighted least squares,
``normal``), Huber and Student-t (robust). Each class is named by its option file
``conf/likelihood/<name>.yaml``; its fields are the keys of the ``likelihood`` node.

Huber (1964), Ann. Math. Statist. 35, 73: ρ(z) = ½z² for |z| ≤ k, k|z| − ½k² beyond; its
IRLS weight is min(1, k/|z|) (Holland & Welsch 1977).
"""

from __future__ import annotations

import dataclasses

from jfx.lazy import LazyModule
from jfx.scale.base import Likelihood
from jfx.validate import setting

jnp = LazyModule("jax.numpy")  # config classes load without JAX (jfx.lazy)


@dataclasses.dataclass(frozen=True)
class NormalLikelihood(Likelihood):
    """Gaussian errors with standard deviation σ: nll = ½ Σ w ((I − I_model)/σ)²."""

    def nll(self, model_I, obs_I, sigma, weights):
        z = (obs_I - model_I) / sigma
        return 0.5 * jnp.sum(weights * z * z)


@dataclasses.dataclass(frozen=True)
class HuberLikelihood(Likelihood):
    """Huber loss with threshold ``k`` (in σ units, default 3, > 0)."""

    k: float = setting(3.0, positive=True)

    def irls_weights(self, z):
        a = jnp.abs(z)
        return jnp.where(a <= self.k, 1.0, self.k / jnp.maximum(a, 1e-300))

    def nll(self, model_I, obs_I, sigma, weights):
        z = (obs_I - model_I) / sigma
        a = jnp.abs(z)
        rho = jnp.where(a <= self.k, 0.5 * z * z, self.k * a - 0.5 * self.k**2)
        return jnp.sum(weights * rho)


@dataclasses.dataclass(frozen=True)
class StudentTLikelihood(Likelihood):
    """Student-t errors with ``nu`` degrees of freedom (> 0; scale σ): heavy tails for outliers.

    nll = Σ w (ν+1)/2 · ln(1 + z²/ν); IRLS weight (ν+1)/(ν+z²) (Lange, Little & Taylor 1989,
    J. Am. Stat. Assoc. 84, 881; used for scaling by careless, Dalton et al. 2022).
    """

    nu: float = setting(4.0, positive=True)

    def irls_weights(self, z):
        return (self.nu + 1.0) / (self.nu + z * z)

    def nll(self, model_I, obs_I, sigma, weights):
        z = (obs_I - model_I) / sigma
        return jnp.sum(weights * 0.5 * (self.nu + 1.0) * jnp.log1p(z * z / self.nu))

"""Abstract interfaces of the scaling model (careless-style decomposition).

The expected observation is ``I_model = scale(params_s, obs) · partiality(params_p, obs) ·
I_hkl``; a :class:`Likelihood` turns model and data into residuals (least squares) or a
negative log-likelihood (first-order optimisers). Each part owns its parameters as a pytree

    {"global": {name: scalar array}, "image": {name: (n_img,) array}}

so that the fitting machinery (:mod:`jfx.scale.fit`) can slice the ``image`` leaves per
image (vmapped per-image Levenberg–Marquardt) and refine the ``global`` leaves jointly.
Model classes are frozen dataclasses (hashable: they are static arguments of the jitted
kernels). A new model is ONE subclass implementing ``init_params``, ``__call__`` and
``free``; gradients come from JAX and the fitting from :func:`jfx.scale.fit.fit_scales`.

Rules for ``__call__``: index image leaves with ``obs.image`` (the fitter passes per-image
slices of shape (1,) together with ``obs.image == 0``), never use ``obs.n_img`` there, and
stay finite on invalid rows.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Any, ClassVar

from jfx.lazy import LazyModule
from jfx.validate import Settings

if TYPE_CHECKING:
    from jfx.scale.observations import Observations

# the models are config classes: loading them must not load JAX (jfx.lazy)
jax = LazyModule("jax")
jnp = LazyModule("jax.numpy")

Params = dict[str, dict[str, Any]]


def empty_params() -> Params:
    """Parameter pytree of a model without parameters."""
    return {"global": {}, "image": {}}


def all_fixed(params: Params) -> Params:
    """Free mask with every leaf fixed."""
    return jax.tree_util.tree_map(lambda _: False, params)


class _Part(Settings, abc.ABC):
    """Common API of partiality and scale models (frozen dataclasses; their fields are
    checked by :class:`jfx.validate.Settings`)."""

    @abc.abstractmethod
    def init_params(self, obs: Observations) -> Params:
        """Starting parameters: ``{"global": {...}, "image": {... (n_img,) leaves}}``."""

    @abc.abstractmethod
    def __call__(self, params: Params, obs: Observations) -> jnp.ndarray:
        """Per-observation value (n,) float64."""

    def free(self, settings: Any = None) -> Params:
        """Free mask: same structure as :meth:`init_params`, a Python bool per leaf.

        ``settings`` (a :class:`jfx.scale.settings.ScaleSettings`) may switch options such as
        ``refine_bfactor`` / ``refine_wedge``; ``None`` = the model's own configuration.
        """
        raise NotImplementedError

    def describe(self, params: Params) -> dict[str, Any]:
        """Physical values of the parameters (e.g. ``{"mosaicity_deg": ...}``)."""
        return {}

    def fix_gauge(self, params: Params, image_ok: Any) -> Params:
        """Remove the degeneracy with the merged intensities when there is no reference.

        ``image_ok`` (n_img,) bool marks images with observations. Default: unchanged.
        """
        return params

    def prior_residuals(self, params: Params) -> jnp.ndarray | None:
        """Restraints on the global leaves as extra least-squares residuals (m,) (a
        Gaussian prior: ½Σr² is added to the cost), or None (default: none)."""
        return None

    def image_prior_residuals(self, params: Params) -> jnp.ndarray | None:
        """Restraints on the image leaves (residuals of ONE image: the fitter passes its
        leaves as (1,) slices), or None (default: none)."""
        return None

    def update_hyperparameters(self, params: Params, fit: Any, obs: Observations) -> Params:
        """Parameters after a scaling cycle with fixed (mask False) hyper-parameters
        re-estimated from ``fit`` (:class:`jfx.scale.fit.ScaleFit`) and ``obs``
        (default: unchanged)."""
        return params


class PartialityModel(_Part):
    """Fraction P ∈ [0, 1] of a reflection's intensity recorded in an observation.

    The interface of the config group ``partiality`` (``-P``): each option file
    ``conf/partiality/<name>.yaml`` names its model class in ``_target_``, and the
    instantiated model (its fields are the group's config keys) is what
    :func:`jfx.scale.scaling.scale_merge` fits. ``name`` labels it in the scaling summary
    on the console (default: the class name; the config stored in ``/entry/jfx/config``
    names the class); ``uses_wedge`` says that :meth:`bind`
    takes the wedge options ``-w[=v]`` (without it ``-w`` is refused).
    """

    config_node = "partiality"
    name: ClassVar[str] = ""
    uses_wedge: ClassVar[bool] = False

    @property
    def label(self) -> str:
        """``name``, or the class name when the class sets none."""
        return self.name or type(self).__name__

    def bind(self, settings: Any, *, bandwidth_fwhm: float, stills: bool) -> PartialityModel:
        """This model specialised to the runs being scaled (default: unchanged).

        Args:
            settings: the scaling options (:class:`jfx.scale.settings.ScaleSettings`;
                ``-w`` is ``refine_wedge`` / ``wedge_start_deg``).
            bandwidth_fwhm: the largest relative bandwidth of the runs.
            stills: whether still runs with a refined beam centre are scaled (their
                orientation can be post-refined).
        """
        return self


class ScaleModel(_Part):
    """Multiplicative scale factor g per observation (e.g. G·exp(−2B s²)).

    The interface of the config group ``scale_model``: each option file
    ``conf/scale_model/<name>.yaml`` names its class in ``_target_``; :meth:`bind`
    specialises the configured model to the observations being scaled (``-B``, the
    rotation ranges of the runs, …) before :func:`jfx.scale.fit.fit_scales` fits it.
    """

    config_node = "scale_model"
    name: ClassVar[str] = ""

    @property
    def label(self) -> str:
        """``name``, or the class name when the class sets none."""
        return self.name or type(self).__name__

    def image_factors(self, params: Params, obs: Observations) -> jnp.ndarray | None:
        """(n, FRAME_SLOTS) the per-image factor of each frame a row was recorded on
        (``obs.frame_img``), for a model whose g is Σ_k w_k·factor_k + ``obs.frame_other``
        times image-independent terms; None (default) for a model without per-image terms.
        The per-image fit uses it to hold the neighbouring images' factors fixed."""
        return None

    def image_values(self, params: Params, obs: Observations) -> dict[str, Any] | None:
        """Per-image ``scale`` and ``bfactor`` (n_img,) for the outputs of a model whose
        scale is not one parameter per image, or None (default: :meth:`describe`'s
        ``scale``/``bfactor``, else the geometric mean of g over each image's rows)."""
        return None

    def summary(self, params: Params, obs: Observations) -> str | None:
        """One line on the fitted model for the console (``obs.valid``: the rows merged),
        or None (default)."""
        return None

    def bind(self, settings: Any, obs: Observations) -> ScaleModel:
        """This model specialised to ``obs`` (default: unchanged).

        Args:
            settings: the scaling options (:class:`jfx.scale.settings.ScaleSettings`;
                ``-B`` is ``refine_bfactor``).
            obs: the observations to be scaled (rotation ranges, beam directions).
        """
        return self


class Likelihood(Settings, abc.ABC):
    """Error model of an observation given the model intensity.

    The interface of the config group ``likelihood``: each option file
    ``conf/likelihood/<name>.yaml`` names its class (a frozen dataclass; its fields are the
    config keys) in ``_target_``.

    ``weights`` (n,) are fixed per-row weights (0 for unused rows; IRLS weights for robust
    variants come from :meth:`irls_weights`).
    """

    def residuals(self, model_I: jnp.ndarray, obs_I: jnp.ndarray, sigma: jnp.ndarray,
                  weights: jnp.ndarray) -> jnp.ndarray:
        """Least-squares residuals (n,): √w·(I_obs − I_model)/σ; ½Σr² is the cost."""
        return jnp.sqrt(weights) * (obs_I - model_I) / sigma

    def irls_weights(self, z: jnp.ndarray) -> jnp.ndarray:
        """Iteratively-reweighted-least-squares weights for normalised residuals z (n,)."""
        return jnp.ones_like(z)

    config_node = "likelihood"

    @abc.abstractmethod
    def nll(self, model_I: jnp.ndarray, obs_I: jnp.ndarray, sigma: jnp.ndarray,
            weights: jnp.ndarray) -> jnp.ndarray:
        """Negative log-likelihood (scalar, up to a constant), rows weighted by ``weights``."""

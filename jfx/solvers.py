"""Nonlinear least-squares solvers over the FREE leaves of a parameter pytree.

One interface, :func:`solve`, two solvers selected by name:

* ``lm``: Levenberg–Marquardt (Levenberg 1944; Marquardt 1963, J. SIAM 11, 431) with
  Marquardt's diagonal scaling and Nielsen's damping update (Madsen, Nielsen & Tingleff 2004,
  "Methods for non-linear least squares problems", §3.2). The Jacobian is ``jax.jacfwd`` of
  the residual function over the free parameters only; the whole loop is a
  ``lax.while_loop``. Geometry must run in float64 (x64, enabled by ``import jfx``).
* ``lbfgs``: ``optax.lbfgs`` (zoom line search) on ½Σr², in an in-jit ``lax.while_loop``.
  The free parameters are rescaled by the inverse column norms of the Jacobian at the start
  (one unit of every scaled parameter moves the residual vector by ≈ 1), which makes the
  gradient-norm stopping test meaningful.

Both functions are pure and traceable: wrap them in ``jax.jit`` and ``jax.vmap`` (under vmap
a ``while_loop`` runs until every lane has stopped; finished lanes are frozen).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jfx.models._pytree import pytree_dataclass

SOLVERS = ("lm", "lbfgs")
DEFAULT_TOL = {"lm": 1e-10, "lbfgs": 1e-5}
"""Default tolerances: ``lm`` relative decrease of the cost per accepted step; ``lbfgs``
norm of the gradient in scaled units (≈ px-equivalents of residual)."""


@pytree_dataclass
class SolveInfo:
    """Solver outcome (scalars; batched under vmap).

    Attributes:
        iterations: int, iterations done (LM: Jacobian evaluations incl. rejected steps).
        cost: final ½Σr² of the (robust) residual vector.
        rmsd: sqrt(Σr² / number of nonzero residual components) — with padded rows exactly
            0, the rms per observed component.
        converged: bool, the stopping test was met before ``max_iter``.
    """

    iterations: jnp.ndarray
    cost: jnp.ndarray
    rmsd: jnp.ndarray
    converged: jnp.ndarray


def split_free(params: Any, free_mask: Any):
    """Free leaves → flat float64 vector ``x0`` and ``unflatten(x)`` that puts a vector back
    into the pytree; also the indices of the free leaves and their sizes (the vector's
    layout). ``free_mask`` has the structure of ``params`` with a bool per leaf."""
    leaves, treedef = jax.tree_util.tree_flatten(params)
    mask = [bool(m) for m in jax.tree_util.tree_leaves(free_mask)]
    if len(mask) != len(leaves):
        raise ValueError("free mask and parameters have different structures")
    idx = [i for i, m in enumerate(mask) if m]
    shapes = [jnp.shape(leaves[i]) for i in idx]
    sizes = [int(np.prod(s)) for s in shapes]
    if idx:
        x0 = jnp.concatenate([jnp.ravel(jnp.asarray(leaves[i], jnp.float64)) for i in idx])
    else:
        x0 = jnp.zeros((0,), jnp.float64)

    def unflatten(x: jnp.ndarray):
        new = list(leaves)
        o = 0
        for i, shp, n in zip(idx, shapes, sizes):
            new[i] = jnp.reshape(x[o:o + n], shp)
            o += n
        return jax.tree_util.tree_unflatten(treedef, new)

    return x0, unflatten, idx, sizes


def _split(params: Any, free_mask: Any):
    """Free leaves → flat vector and the function that puts a vector back."""
    x0, unflatten, _, _ = split_free(params, free_mask)
    return x0, unflatten


def _rmsd(r: jnp.ndarray) -> jnp.ndarray:
    n = jnp.maximum(jnp.sum(r != 0), 1)
    return jnp.sqrt(jnp.sum(r * r) / n)


def solve(residual_fn: Callable[..., jnp.ndarray], params0: Any, free_mask: Any,
          args: tuple = (), solver: str = "lm", max_iter: int = 50,
          tol: float | None = None) -> tuple[Any, SolveInfo]:
    """Minimise ½‖residual_fn(params, *args)‖² over the free leaves of ``params0``.

    Args:
        residual_fn: ``(params, *args) -> r`` (m,) float64, pure JAX.
        params0: start, a pytree (fixed leaves are returned bit-identical).
        free_mask: pytree of the same structure with a Python bool per leaf (True = free).
        args: extra arguments of ``residual_fn`` (arrays are passed, never closed over).
        solver: ``lm`` or ``lbfgs``.
        max_iter: iteration cap (static).
        tol: stopping tolerance (see :data:`DEFAULT_TOL`); ``None`` = default.
    Returns:
        (params, :class:`SolveInfo`).
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r} (known: {', '.join(SOLVERS)})")
    tol = DEFAULT_TOL[solver] if tol is None else float(tol)
    x0, unflatten = _split(params0, free_mask)

    def f(x):
        return jnp.ravel(residual_fn(unflatten(x), *args))

    if x0.shape[0] == 0:
        r = f(x0)
        info = SolveInfo(iterations=jnp.asarray(0), cost=0.5 * jnp.sum(r * r),
                         rmsd=_rmsd(r), converged=jnp.asarray(True))
        return params0, info
    if solver == "lm":
        x, info = _lm(f, x0, max_iter, tol)
    else:
        x, info = _lbfgs(f, x0, max_iter, tol)
    return unflatten(x), info


def _lm(f, x0, max_iter: int, tol: float):
    n = x0.shape[0]

    def f2(z):
        r = f(z)
        return r, r

    def rj(x):
        J, r = jax.jacfwd(f2, has_aux=True)(x)
        return r, J

    r0, J0 = rj(x0)
    c0 = 0.5 * jnp.sum(r0 * r0)
    tiny = jnp.finfo(jnp.float64).tiny
    lam0 = 1e-3
    # state: x, r, J, cost, lam, nu, it, done, converged
    init = (x0, r0, J0, c0, jnp.asarray(lam0), jnp.asarray(2.0), jnp.asarray(0),
            c0 <= tiny, c0 <= tiny)

    def cond(s):
        return (~s[7]) & (s[6] < max_iter)

    def body(s):
        x, r, J, c, lam, nu, it, _, _ = s
        A = J.T @ J
        g = J.T @ r
        d = jnp.diagonal(A)
        d = jnp.maximum(d, 1e-12 * jnp.max(d) + tiny)
        delta = jnp.linalg.solve(A + lam * jnp.diag(d), -g)
        xn = x + delta
        rn, Jn = rj(xn)
        cn = 0.5 * jnp.sum(rn * rn)
        pred = 0.5 * jnp.dot(delta, lam * d * delta - g)
        rho = (c - cn) / jnp.maximum(pred, tiny)
        ok = jnp.isfinite(cn) & (cn < c)
        lam_ok = lam * jnp.maximum(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        small_step = jnp.sqrt(jnp.sum(delta * delta)) <= 1e-14 * (
            jnp.sqrt(jnp.sum(x * x)) + 1e-14)
        conv = (ok & ((c - cn) <= tol * c)) | small_step | (cn <= tiny) | (
            jnp.max(jnp.abs(g)) <= tiny)
        stuck = lam > 1e16
        x2 = jnp.where(ok, xn, x)
        r2 = jnp.where(ok, rn, r)
        J2 = jnp.where(ok, Jn, J)
        c2 = jnp.where(ok, cn, c)
        lam2 = jnp.where(ok, lam_ok, lam * nu)
        nu2 = jnp.where(ok, 2.0, 2.0 * nu)
        return (x2, r2, J2, c2, lam2, nu2, it + 1, conv | stuck, conv | stuck)

    x, r, J, c, lam, nu, it, done, conv = jax.lax.while_loop(cond, body, init)
    del n, J, lam, nu, done
    return x, SolveInfo(iterations=it, cost=c, rmsd=_rmsd(r), converged=conv)


def lbfgs_loop(cost, z0, max_iter: int, tol, grad_norm=None):
    """optax L-BFGS on ``cost(z)`` from ``z0`` inside one ``lax.while_loop``.

    Stops after ``max_iter`` iterations or when ``grad_norm(g)`` (default the Euclidean norm)
    of the latest gradient is ≤ ``tol``. Returns (z, iterations, gradient norm).
    """
    norm = (lambda g: jnp.sqrt(jnp.sum(g * g))) if grad_norm is None else grad_norm
    opt = optax.lbfgs()
    st0 = opt.init(z0)
    vg = optax.value_and_grad_from_state(cost)

    def cond(s):
        _, _, it, gn = s
        return (it < max_iter) & (gn > tol)

    def body(s):
        z, st, it, _ = s
        v, g = vg(z, state=st)
        upd, st = opt.update(g, st, z, value=v, grad=g, value_fn=cost)
        z = optax.apply_updates(z, upd)
        return z, st, it + 1, norm(optax.tree_utils.tree_get(st, "grad"))

    g0 = jax.grad(cost)(z0)
    z, _, it, gn = jax.lax.while_loop(cond, body, (z0, st0, jnp.asarray(0), norm(g0)))
    return z, it, gn


def _lbfgs(f, x0, max_iter: int, tol: float):
    J0 = jax.jacfwd(f)(x0)
    col = jnp.sqrt(jnp.sum(J0 * J0, axis=0))
    scale = 1.0 / jnp.where(col > 0, col, 1.0)

    def cost(z):
        r = f(x0 + scale * z)
        return 0.5 * jnp.sum(r * r)

    z, it, gn = lbfgs_loop(cost, jnp.zeros_like(x0), max_iter, tol)
    x = x0 + scale * z
    r = f(x)
    return x, SolveInfo(iterations=it, cost=0.5 * jnp.sum(r * r), rmsd=_rmsd(r),
                        converged=gn <= tol)

"""Synthetic stills for the pixel-refinement tests.

Frames are rendered from known parameters with the forward model's own parts (Poisson
counts on a flat background), so the truth of every fitted parameter is known exactly; the
acceptance against an independent simulator is the benchmark in experiments/pixelrefine/.
The fit then starts from a lattice turned by ``START_ROTATION_DEG`` with the cell stretched
by ``START_CELL_CHANGE``, the default starting mosaicity/domain, and the file's (wrong)
bandwidth, as the pipeline would after the spot-based refinement.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from jfx.integrate.predict import predict_still
from jfx.models.cell import cell_to_basis
from jfx.models.geometry import Beam, Detector, Geometry
from jfx.pixelrefine.components import EwaldOffsetPartiality, GaussianProfile, PlaneBackground
from jfx.pixelrefine.fit import model, still_params
from jfx.pixelrefine.stills import ReferenceLookup, pack, prepare
from jfx.refine.params import from_basis
from jfx.sim.spots import random_rotation
from jfx.symmetry.asu import to_asu

CELL = (79.1, 79.1, 38.0, 90.0, 90.0, 90.0)
SG = 96
SYSTEM = "tetragonal"
N_STILLS = 4
HALF = 5
BACKGROUND = 1.5
FILE_BANDWIDTH = 0.006
TRUE = dict(mosaicity_deg=0.08, domain_invA=3e-4, bandwidth_fwhm=0.01, sigma_px=0.9,
            radial_growth_px=0.4, scale=2.0)
START_ROTATION_DEG = 0.05
START_CELL_CHANGE = 0.003


def geometry() -> Geometry:
    return Geometry(Beam.create(1.0, bandwidth_fwhm=FILE_BANDWIDTH),
                    Detector.create(40.0, (256.3, 250.7), (512, 512)))


def rotation(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle_rad) * K + (1 - math.cos(angle_rad)) * K @ K


def misorientation_deg(b1: np.ndarray, b2: np.ndarray) -> float:
    """Angle (deg) of the rotation that best maps basis b1 onto b2 (polar decomposition)."""
    M = np.linalg.solve(b1, b2)  # b2 = b1 M  (rows a, b, c): M ≈ Rᵀ
    u, _, vt = np.linalg.svd(M)
    R = u @ vt
    return math.degrees(math.acos(np.clip((np.trace(R) - 1) / 2, -1, 1)))


def true_intensities(rng: np.random.Generator, d_min: float = 1.6):
    """Wilson-like |F|² of every ASU reflection to ``d_min`` (P4₃2₁2)."""
    n = 50
    g = np.mgrid[-n:n + 1, -n:n + 1, -24:25].reshape(3, -1).T
    B = cell_to_basis(np.asarray(CELL))
    q = np.linalg.norm(g @ np.linalg.inv(B).T, axis=1)
    g = g[(q > 0) & (q <= 1 / d_min)]
    a, _ = to_asu(g, SG)
    u = np.unique(a, axis=0)
    return u, 2000.0 * rng.exponential(size=len(u))


@dataclasses.dataclass
class Still:
    frame: np.ndarray
    basis_true: np.ndarray
    basis_start: np.ndarray
    image: int


def _params_true(cell_u):
    part = EwaldOffsetPartiality(mosaicity_deg=TRUE["mosaicity_deg"],
                                 domain_invA=TRUE["domain_invA"])
    prof = GaussianProfile(sigma_px=TRUE["sigma_px"])
    p = still_params(cell_u, part, prof, TRUE["bandwidth_fwhm"])
    p["profile"]["radial_growth_px"] = np.asarray(TRUE["radial_growth_px"])
    p["scale"]["log_g"] = np.asarray(math.log(TRUE["scale"]))
    return p, part, prof


def render(geo: Geometry, basis: np.ndarray, lookup: ReferenceLookup,
           rng: np.random.Generator) -> np.ndarray:
    """A Poisson frame of the still with the true parameters."""
    ny, nx = geo.detector.shape
    zero = np.zeros((ny, nx), np.int32)
    prep = _prepare(zero, 0, geo, basis, lookup, max_fit=4096, envelope_deg=0.3, n_sigma=4.0)
    from jfx.pixelrefine.fit import model as fwd
    p, part, prof = _params_true(prep.cell_u)
    cap = 1 << int(np.ceil(np.log2(max(prep.n, 1))))
    d = pack([prep], 1, cap, "all")
    import jax

    one = jax.tree_util.tree_map(lambda a: np.asarray(a)[0], d)
    mo = fwd(p, one, part, prof, SYSTEM)
    lam = np.full((ny, nx), BACKGROUND)
    m = np.asarray(mo["m"])[:prep.n]
    s = np.asarray(mo["s"])[:prep.n]
    B = 2 * HALF + 1
    X = (prep.x0[:, None, None] + np.arange(B)[None, None, :]).astype(int)
    Y = (prep.y0[:, None, None] + np.arange(B)[None, :, None]).astype(int)
    X, Y = np.broadcast_to(X, s.shape), np.broadcast_to(Y, s.shape)
    on = (X >= 0) & (X < nx) & (Y >= 0) & (Y < ny)
    np.add.at(lam, (Y[on], X[on]), (m[:, None, None] * s)[on])
    return rng.poisson(lam).astype(np.int32)


@pytest.fixture(scope="session")
def stills():
    """(geometry, lookup of the true intensities, [Still] × N_STILLS, true intensities)."""
    rng = np.random.default_rng(15)
    geo = geometry()
    hkl, I = true_intensities(rng)
    lookup = ReferenceLookup(hkl, I, SG)
    B0 = cell_to_basis(np.asarray(CELL))
    out = []
    for i in range(N_STILLS):
        U = random_rotation(rng)
        bt = B0 @ U.T
        ax = rng.normal(size=3)
        bs = (1 + START_CELL_CHANGE) * bt @ rotation(ax, math.radians(START_ROTATION_DEG)).T
        out.append(Still(render(geo, bt, lookup, rng), bt, bs, i))
    return geo, lookup, out, (hkl, I)


def _prepare(frame, image, geo, basis, lookup, *, max_fit, envelope_deg, n_sigma):
    """The stage's preparation of one still: prediction in an envelope, lattice
    parameters, boxes (as :mod:`jfx.pipeline.pixelrefine_stage` does)."""
    pred = predict_still(geo, basis, 1.6, mosaicity_deg=envelope_deg, n_sigma=n_sigma,
                         space_group=SG)
    cp = from_basis(basis, SYSTEM)
    return prepare(frame, image, image, geo, pred, U0=cp.U0, cell_u=cp.cell_u,
                   reference=lookup, half=HALF, inner_px=3.0, background=PlaneBackground(),
                   max_fit=max_fit, pixel_mask=None, error_value=None, saturation_value=None)


def prepare_still(geo, st: Still, lookup, max_fit: int = 256):
    return _prepare(st.frame, st.image, geo, st.basis_start, lookup, max_fit=max_fit,
                    envelope_deg=0.2, n_sigma=3.0)


__all__ = ["CELL", "SG", "SYSTEM", "TRUE", "misorientation_deg", "model", "prepare_still"]

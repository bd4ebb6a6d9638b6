"""Reciprocal-space ASU mapping and inverse-variance merging of intensities (pure numpy + gemmi).

Conventions
-----------
* Miller indices are integer ``(n, 3)`` arrays.  The asymmetric unit (ASU) is gemmi's default
  reciprocal ASU, which is the CCP4 one (the ASU used in MTZ files; gemmi ``ReciprocalAsu`` with
  ``tnt=False``).
* Symmetry: a reciprocal-space operation maps ``h`` to ``h' = h R`` (row vector times the
  rotation part of the real-space operation ``R``; International Tables Vol. B, §1.4.2).
  Friedel's law adds ``h' → −h'``.  Following gemmi / CCP4 (the MTZ ``M/ISYM`` column) the
  equivalents are tried in the order op₀, −op₀, op₁, −op₁, …; the first one inside the ASU is
  taken and ``isym`` (1-based) is its position in that list, so odd ``isym`` ⇔ the observation
  is an I(+) measurement (the ASU index itself was observed, up to a proper rotation) and even
  ``isym`` ⇔ I(−).
* Centric reflections (``h`` equivalent to ``−h``) have one Friedel "sign" only; systematic
  absences follow ``gemmi.GroupOps.is_systematically_absent``.

Everything is vectorised: the ASU test is evaluated on numpy arrays (gemmi's ten ASU
conditions, see ``_ASU_CONDITIONS``), symmetry is applied to the *distinct* Miller indices of
the input only, and per-reflection sums use :func:`numpy.bincount`.  Space groups given in a
non-reference setting (e.g. ``"P 1 1 21"``) fall back to gemmi's scalar ``to_asu`` on the
distinct indices.
"""

from __future__ import annotations

import dataclasses
import re

import gemmi
import numpy as np

# --------------------------------------------------------------------------------------------
# Space groups and cells
# --------------------------------------------------------------------------------------------

def get_space_group(space_group: int | str | gemmi.SpaceGroup) -> gemmi.SpaceGroup:
    """A :class:`gemmi.SpaceGroup` from an IT number (1–230), an H-M/Hall symbol or a SpaceGroup.

    Raises:
        ValueError: unknown space group (one-line message).
    """
    if isinstance(space_group, gemmi.SpaceGroup):
        return space_group
    if isinstance(space_group, (int, np.integer)) or (
            isinstance(space_group, str) and space_group.strip().isdigit()):
        n = int(space_group)
        if not 1 <= n <= 230:
            raise ValueError(f"space group must be a number 1-230 or a symbol, got {space_group!r}")
        return gemmi.find_spacegroup_by_number(n)
    if isinstance(space_group, str):
        sg = gemmi.find_spacegroup_by_name(space_group.strip())
        if sg is None:
            raise ValueError(f"unknown space group {space_group!r}")
        return sg
    raise ValueError(f"space group must be a number 1-230 or a symbol, got {space_group!r}")


def d_spacing(hkl: np.ndarray, cell) -> np.ndarray:
    """Resolution d (Å) of Miller indices ``hkl`` (n, 3) for ``cell`` = (a, b, c, α, β, γ) (Å, °).

    Uses the reciprocal metric tensor (Giacovazzo, *Fundamentals of Crystallography*, §2.3):
    1/d² = hᵀ G* h.  (0, 0, 0) gives ``inf``.
    """
    hkl = np.asarray(hkl, dtype=np.float64).reshape(-1, 3)
    a, b, c, al, be, ga = (float(x) for x in cell)
    al, be, ga = np.radians([al, be, ga])
    g = np.array([[a * a, a * b * np.cos(ga), a * c * np.cos(be)],
                  [a * b * np.cos(ga), b * b, b * c * np.cos(al)],
                  [a * c * np.cos(be), b * c * np.cos(al), c * c]])
    gstar = np.linalg.inv(g)
    inv_d2 = np.einsum("ni,ij,nj->n", hkl, gstar, hkl)
    with np.errstate(divide="ignore"):
        return 1.0 / np.sqrt(inv_d2)


# --------------------------------------------------------------------------------------------
# ASU mapping
# --------------------------------------------------------------------------------------------

def _unique_rows(hkl: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(hkl, axis=0, return_inverse=True)`` for small integer (n, 3) arrays, fast.

    Rows are packed into one int64 key (|index| < 2²⁰ each), which sorts in the same
    lexicographic (h, k, l) order as ``np.unique(axis=0)``.
    """
    h = np.asarray(hkl, dtype=np.int64)
    if h.size and np.abs(h).max() >= (1 << 20):
        raise ValueError("Miller indices must be smaller than 2**20 in magnitude")
    off = 1 << 20
    key = ((h[:, 0] + off) << 42) | ((h[:, 1] + off) << 21) | (h[:, 2] + off)
    ukey, inv = np.unique(key, return_inverse=True)
    uniq = np.stack([(ukey >> 42) - off, ((ukey >> 21) & ((1 << 21) - 1)) - off,
                     (ukey & ((1 << 21) - 1)) - off], axis=1)
    return uniq, inv.reshape(-1)


# gemmi's ReciprocalAsu.condition_str() for reference settings takes one of these ten forms
# (checked for all 230 groups when the module is first used for a group).
_ASU_CONDITIONS: dict[str, object] = {}


def _compile_condition(cond: str):
    """Turn a gemmi ASU condition string into a vectorised numpy predicate f(h, k, l)."""
    if not re.fullmatch(r"[hkl0<>=() andor]+", cond):  # pragma: no cover - defensive
        raise ValueError(f"unsupported ASU condition {cond!r}")
    expr = re.sub(r"([hkl0])\s*(>=|<=|>|<|=)\s*([hkl0])",
                  lambda m: f"({m.group(1)}{'==' if m.group(2) == '=' else m.group(2)}"
                            f"{m.group(3)})", cond)
    expr = expr.replace(" and ", " & ").replace(" or ", " | ")
    code = compile(expr, "<asu>", "eval")

    def is_in(h, k, l):
        return np.asarray(eval(code, {"__builtins__": {}}, {"h": h, "k": k, "l": l}),
                          dtype=bool)

    return is_in


def _asu_predicate(sg: gemmi.SpaceGroup):
    cond = gemmi.ReciprocalAsu(sg).condition_str()
    f = _ASU_CONDITIONS.get(cond)
    if f is None:
        f = _compile_condition(cond)
        _ASU_CONDITIONS[cond] = f
    return f


def _to_asu_distinct(hkl: np.ndarray, sg: gemmi.SpaceGroup
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ASU mapping of the distinct rows of ``hkl``: ``(inverse (n,), asu (u, 3), isym (u,))``."""
    hkl = np.asarray(hkl)
    if hkl.ndim != 2 or hkl.shape[1] != 3:
        raise ValueError(f"hkl must have shape (n, 3), got {hkl.shape}")
    if hkl.shape[0] == 0:
        return np.zeros(0, np.int64), np.zeros((0, 3), np.int64), np.zeros(0, np.int32)
    uniq, inv = _unique_rows(hkl)
    u_asu = np.zeros_like(uniq)
    u_isym = np.zeros(len(uniq), np.int32)
    ops = sg.operations()
    if sg.is_reference_setting():
        is_in = _asu_predicate(sg)
        todo = np.arange(len(uniq))
        isym = 0
        for op in ops.sym_ops:
            rot = np.asarray(op.rot, dtype=np.int64)
            new = (uniq[todo] @ rot) // op.DEN
            for sign in (1, -1):
                isym += 1
                cand = sign * new
                ok = is_in(cand[:, 0], cand[:, 1], cand[:, 2])
                if ok.any():
                    idx = todo[ok]
                    u_asu[idx] = cand[ok]
                    u_isym[idx] = isym
                    todo = todo[~ok]
                    new = new[~ok]
                if todo.size == 0:
                    break
            if todo.size == 0:
                break
        if todo.size:  # pragma: no cover - inconsistent group
            raise RuntimeError(f"{todo.size} reflections not mapped to the ASU of {sg.hm}")
    else:
        asu = gemmi.ReciprocalAsu(sg)
        for i, h in enumerate(uniq.tolist()):
            a, s = asu.to_asu(h, ops)
            u_asu[i] = a
            u_isym[i] = s
    return inv, u_asu, u_isym


def to_asu(hkl: np.ndarray, space_group: int | str | gemmi.SpaceGroup
           ) -> tuple[np.ndarray, np.ndarray]:
    """Map Miller indices to the CCP4/gemmi reciprocal ASU (vectorised ``ReciprocalAsu.to_asu``).

    Args:
        hkl: (n, 3) integer Miller indices.
        space_group: IT number, symbol or :class:`gemmi.SpaceGroup`.

    Returns:
        ``(asu_hkl (n, 3) int32, isym (n,) int32)`` — identical to gemmi's scalar
        ``ReciprocalAsu(sg).to_asu(h, sg.operations())`` row by row (isym odd ⇔ I(+)).
    """
    inv, u_asu, u_isym = _to_asu_distinct(hkl, get_space_group(space_group))
    return u_asu[inv].astype(np.int32), u_isym[inv]


@dataclasses.dataclass(frozen=True)
class AsuMap:
    """Observations (n rows) mapped onto unique ASU reflections (m rows).

    Attributes:
        asu_hkl: (n, 3) int32 — each observation's Miller index in the CCP4/gemmi ASU.
        plus: (n,) bool — True for an I(+) observation (odd gemmi ``isym``).  For centric
            reflections the sign carries no information and merging ignores it.
        refl: (n,) int32 — index of the observation's reflection in ``unique_hkl``
            (the same in anomalous and non-anomalous mode).
        unique_hkl: (m, 3) int32 — distinct ASU indices, sorted lexicographically (h, k, l).
        centric: (m,) bool — ``gemmi.GroupOps.is_reflection_centric`` of ``unique_hkl``.
        absent: (n,) bool — observation is systematically absent.
        refl_anom: (n,) int32 — index of the (reflection, Friedel sign) pair for anomalous
            merging: ``2·refl`` for I(+) observations and for every observation of a centric
            reflection, ``2·refl + 1`` for I(−) observations of acentric reflections.  Pairs
            are therefore indexed 0 … 2m−1; odd slots of centric reflections stay empty.
        anomalous: the mode the map was requested for (informational; both indices are
            always present).
        space_group: IT number of the space group used.
    """

    asu_hkl: np.ndarray
    plus: np.ndarray
    refl: np.ndarray
    unique_hkl: np.ndarray
    centric: np.ndarray
    absent: np.ndarray
    refl_anom: np.ndarray
    anomalous: bool
    space_group: int

    @property
    def n_obs(self) -> int:
        """Number of observations n."""
        return int(self.refl.shape[0])

    @property
    def n_refl(self) -> int:
        """Number of unique ASU reflections m."""
        return int(self.unique_hkl.shape[0])


def asu_map(hkl: np.ndarray, space_group: int | str, anomalous: bool = False) -> AsuMap:
    """Map observed Miller indices to unique reflections of the reciprocal ASU.

    Args:
        hkl: (n, 3) integer Miller indices of the observations.
        space_group: IT number (1–230) or symbol.
        anomalous: keep Friedel pairs separate (sets :attr:`AsuMap.anomalous`; ``refl_anom``
            is computed in both modes).

    Returns:
        An :class:`AsuMap`.
    """
    sg = get_space_group(space_group)
    inv, u_asu, u_isym = _to_asu_distinct(hkl, sg)
    # distinct ASU indices from the (few) distinct input indices, then back to the rows
    if u_asu.shape[0]:
        unique_hkl, u_refl = _unique_rows(u_asu)
    else:
        unique_hkl, u_refl = np.zeros((0, 3), np.int64), np.zeros(0, np.int64)
    unique_hkl = np.ascontiguousarray(unique_hkl, dtype=np.int32)
    asu_hkl = u_asu[inv].astype(np.int32)
    plus = (u_isym[inv] % 2) == 1
    refl = u_refl[inv]
    ops = sg.operations()
    centric = np.asarray(ops.centric_flag_array(unique_hkl), dtype=bool)
    absent_u = np.asarray(ops.systematic_absences(unique_hkl), dtype=bool)
    refl = refl.astype(np.int32)
    minus_slot = (~plus) & (~centric[refl])
    refl_anom = (2 * refl + minus_slot).astype(np.int32)
    return AsuMap(asu_hkl=asu_hkl, plus=plus, refl=refl, unique_hkl=unique_hkl,
                  centric=centric, absent=absent_u[refl], refl_anom=refl_anom,
                  anomalous=bool(anomalous), space_group=int(sg.number))


# --------------------------------------------------------------------------------------------
# Merging
# --------------------------------------------------------------------------------------------

def merge_intensities(refl: np.ndarray, I: np.ndarray, sigma: np.ndarray, n_refl: int,
                      weights: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inverse-variance weighted means per reflection.

    ⟨I⟩_h = Σ w_i I_i / Σ w_i,  σ(⟨I⟩_h) = 1/√(Σ w_i),  w_i = 1/σ_i² (or ``weights``).

    Args:
        refl: (n,) int reflection index of each observation, in [0, n_refl).
        I: (n,) intensities.
        sigma: (n,) standard uncertainties (> 0); used for the weights when ``weights`` is None.
        n_refl: number of reflections m.
        weights: optional (n,) weights replacing 1/σ²; then σ(⟨I⟩) = √(Σ w² σ²)/Σ w
            (error propagation for a general weighted mean; equals 1/√Σw when w = 1/σ²).

    Observations with non-finite I, non-finite or non-positive σ, or non-positive weight are
    ignored.

    Returns:
        ``(I_mean (m,), sigma_mean (m,), n_obs (m,) int64)``; reflections without
        observations have NaN mean and σ and n_obs = 0.
    """
    refl = np.asarray(refl).reshape(-1)
    I = np.asarray(I, dtype=np.float64).reshape(-1)
    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if not (refl.shape == I.shape == sigma.shape):
        raise ValueError("refl, I and sigma must have the same length")
    ok = np.isfinite(I) & np.isfinite(sigma) & (sigma > 0)
    if weights is None:
        w = np.where(ok, 1.0 / np.where(ok, sigma, 1.0) ** 2, 0.0)
        general = False
    else:
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        ok &= np.isfinite(w) & (w > 0)
        w = np.where(ok, w, 0.0)
        general = True
    r = refl[ok]
    wk = w[ok]
    n_obs = np.bincount(r, minlength=n_refl).astype(np.int64)
    sw = np.bincount(r, weights=wk, minlength=n_refl)
    swi = np.bincount(r, weights=wk * I[ok], minlength=n_refl)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(n_obs > 0, swi / sw, np.nan)
        if general:
            sw2s2 = np.bincount(r, weights=(wk * sigma[ok]) ** 2, minlength=n_refl)
            sig = np.where(n_obs > 0, np.sqrt(sw2s2) / sw, np.nan)
        else:
            sig = np.where(n_obs > 0, 1.0 / np.sqrt(sw), np.nan)
    return mean, sig, n_obs


@dataclasses.dataclass(frozen=True)
class MergedReflections:
    """Merged intensities of the observed, not systematically absent ASU reflections.

    Attributes:
        hkl: (m, 3) int32 ASU Miller indices (sorted h, k, l).
        d_A: (m,) float64 resolution (Å).
        I, sigma: (m,) float64 inverse-variance weighted mean over all observations of the
            reflection (both Friedel mates) and its σ.
        n_obs: (m,) int64 number of observations merged.
        centric: (m,) bool.
        I_plus, sig_plus, n_plus, I_minus, sig_minus, n_minus: (m,) Friedel-separated means
            (anomalous mode only, else None).  Acentric reflections with no I(+) (I(−))
            observation have NaN there and n = 0.  Centric reflections have
            I(+) = I(−) = I (Friedel mates are equivalent) with n_plus = n_minus = n_obs.
        cell: (6,) float64 (Å, °).
        space_group: IT number.
        anomalous: whether Friedel pairs were kept separate.
    """

    hkl: np.ndarray
    d_A: np.ndarray
    I: np.ndarray
    sigma: np.ndarray
    n_obs: np.ndarray
    centric: np.ndarray
    cell: np.ndarray
    space_group: int
    anomalous: bool = False
    I_plus: np.ndarray | None = None
    sig_plus: np.ndarray | None = None
    n_plus: np.ndarray | None = None
    I_minus: np.ndarray | None = None
    sig_minus: np.ndarray | None = None
    n_minus: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.hkl.shape[0])


def _valid_obs(asu: AsuMap, I: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    return ((~asu.absent) & np.isfinite(I) & np.isfinite(sigma) & (sigma > 0)
            & np.any(asu.asu_hkl != 0, axis=1))


def merge(asu: AsuMap, I: np.ndarray, sigma: np.ndarray, cell, space_group: int | str,
          anomalous: bool = False, weights: np.ndarray | None = None) -> MergedReflections:
    """Merge observations into a :class:`MergedReflections` (observed reflections only).

    Systematically absent observations, (0, 0, 0) and observations with non-finite I or
    σ ≤ 0 are dropped.  Means are inverse-variance weighted (:func:`merge_intensities`).

    Args:
        asu: the :class:`AsuMap` of the n observations.
        I, sigma: (n,) scaled intensities and σ.
        cell: (a, b, c, α, β, γ) Å, °.
        space_group: IT number or symbol (must be the group ``asu`` was built with).
        anomalous: also merge I(+) and I(−) separately.
        weights: optional (n,) weights instead of 1/σ².
    """
    I = np.asarray(I, dtype=np.float64).reshape(-1)
    sigma = np.asarray(sigma, dtype=np.float64).reshape(-1)
    if I.shape[0] != asu.n_obs or sigma.shape[0] != asu.n_obs:
        raise ValueError(f"I and sigma must have {asu.n_obs} rows (one per observation)")
    sg = get_space_group(space_group)
    if sg.number != asu.space_group:
        raise ValueError(f"space group {sg.number} differs from the ASU map's {asu.space_group}")
    keep = _valid_obs(asu, I, sigma)
    m = asu.n_refl
    w = None if weights is None else np.asarray(weights, np.float64).reshape(-1)[keep]
    mean, sig, n = merge_intensities(asu.refl[keep], I[keep], sigma[keep], m, w)
    sel = n > 0
    hkl = asu.unique_hkl[sel]
    cell = np.asarray(cell, dtype=np.float64).reshape(6)
    kw = {}
    if anomalous:
        am, asg, an = merge_intensities(asu.refl_anom[keep], I[keep], sigma[keep], 2 * m, w)
        ip, sp, npl = am[0::2][sel], asg[0::2][sel], an[0::2][sel]
        im, sm, nm = am[1::2][sel], asg[1::2][sel], an[1::2][sel]
        c = asu.centric[sel]
        im = np.where(c, ip, im)
        sm = np.where(c, sp, sm)
        nm = np.where(c, npl, nm)
        kw = {"I_plus": ip, "sig_plus": sp, "n_plus": npl, "I_minus": im, "sig_minus": sm,
              "n_minus": nm}
    return MergedReflections(hkl=hkl, d_A=d_spacing(hkl, cell), I=mean[sel], sigma=sig[sel],
                             n_obs=n[sel], centric=asu.centric[sel], cell=cell,
                             space_group=int(sg.number), anomalous=bool(anomalous), **kw)

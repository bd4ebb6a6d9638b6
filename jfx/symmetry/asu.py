"""Reciprocal-space ASU mapping and Miller-index helpers (pure numpy + gemmi, host side only).

Shared by scaling (:mod:`jfx.scale`), the simulator and the file readers/writers:
:func:`to_asu`, :func:`asu_map` (observations → unique ASU reflections, :class:`AsuMap`)
and :func:`d_spacing`. Merging itself is :mod:`jfx.scale.merge`.

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
the input only, and distinct rows are found on packed int64 keys.  Space groups given in a
non-reference setting (e.g. ``"P 1 1 21"``) fall back to gemmi's scalar ``to_asu`` on the
distinct indices.
"""

from __future__ import annotations

import dataclasses
import re

import gemmi
import numpy as np

from jfx.symmetry import groups

# --------------------------------------------------------------------------------------------
# Cells
# --------------------------------------------------------------------------------------------

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
    inv, u_asu, u_isym = _to_asu_distinct(hkl, groups.space_group(space_group))
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
    sg = groups.space_group(space_group)
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

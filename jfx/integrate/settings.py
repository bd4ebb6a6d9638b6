"""Integration settings (config group ``integrate``; ``--integration-radius``)."""

from __future__ import annotations

import dataclasses

from jfx.validate import as_floats


@dataclasses.dataclass(frozen=True)
class SummationIntegratorSettings:
    """Summation integration in a circular signal box with a background annulus.

    Attributes:
        radii_px: (r1, r2, r3) in px: signal within r1 of the predicted position, background
            in the annulus r2 ≤ r < r3. Default (3, 5, 7). ``--integration-radius r1`` means
            (r1, r1 + 2, r1 + 4). Requires 0 < r1 ≤ r2 < r3.
    """

    radii_px: tuple[float, float, float] = (3.0, 5.0, 7.0)

    def __post_init__(self) -> None:
        r = as_floats("integration radii (--integration-radius)", self.radii_px)
        if len(r) == 1:
            r = (r[0], r[0] + 2.0, r[0] + 4.0)
        if len(r) != 3:
            raise ValueError(f"integration radii must be r1 or r1,r2,r3 (px), got {len(r)} numbers")
        if not (0 < r[0] <= r[1] < r[2]):
            got = ",".join(f"{v:g}" for v in r)
            raise ValueError(f"integration radii must satisfy 0 < r1 <= r2 < r3, got {got}")
        object.__setattr__(self, "radii_px", r)

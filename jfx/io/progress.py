"""A minimal per-stage progress bar on stderr (no third-party dependency).

On a terminal the bar redraws in place (at most every ``min_interval_s``) showing done/total,
percent and images/s. When the stream is not a TTY it stays quiet until :meth:`Progress.close`,
which always prints one summary line per stage, e.g.
``spot finding + azimuthal integration: 100 frames in 2.1 s (47.6 frames/s)`` (the pipeline
uses ``unit="frames"``).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Progress of one stage over ``total`` items (images).

    Args:
        stage: stage name shown at the start of the line.
        total: number of items expected.
        stream: output stream (default ``sys.stderr``).
        enabled: ``False`` silences everything, including the summary.
        unit: item name for the rate ("images").
        min_interval_s: minimum time between redraws on a TTY.
    """

    def __init__(self, stage: str, total: int, *, stream: TextIO | None = None,
                 enabled: bool = True, unit: str = "images", min_interval_s: float = 0.1) -> None:
        self.stage = stage
        self.total = int(total)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.unit = unit
        self.min_interval_s = min_interval_s
        self.done = 0
        self.t0 = time.perf_counter()
        self._last_draw = 0.0
        self._closed = False
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(success=exc_type is None)

    @property
    def elapsed_s(self) -> float:
        return time.perf_counter() - self.t0

    def rate(self) -> float:
        """Items per second so far (0 before any time has passed)."""
        dt = self.elapsed_s
        return self.done / dt if dt > 0 else 0.0

    def update(self, n: int = 1) -> None:
        """Record ``n`` more finished items and redraw when on a TTY."""
        self.done += int(n)
        if not (self.enabled and self.tty):
            return
        now = time.perf_counter()
        if now - self._last_draw >= self.min_interval_s or self.done >= self.total:
            self._last_draw = now
            self._draw()

    def _draw(self) -> None:
        width = 30
        frac = self.done / self.total if self.total > 0 else 1.0
        filled = int(round(width * min(frac, 1.0)))
        bar = "#" * filled + "-" * (width - filled)
        self.stream.write(f"\r{self.stage}: [{bar}] {self.done}/{self.total} "
                          f"{100 * frac:5.1f}% {self.rate():.1f} {self.unit}/s")
        self.stream.flush()

    def summary(self) -> str:
        """One-line summary of the stage."""
        return (f"{self.stage}: {self.done} {self.unit} in {self.elapsed_s:.2f} s "
                f"({self.rate():.1f} {self.unit}/s)")

    def close(self, success: bool = True) -> None:
        """Finish the bar; print the one-line summary when the stage succeeded."""
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self.tty:
            self.stream.write("\n")
        if success:
            self.stream.write(self.summary() + "\n")
        self.stream.flush()

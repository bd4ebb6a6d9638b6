"""A minimal per-stage progress display on stderr (no third-party dependency).

On a terminal the bar redraws in place (at most every ``min_interval_s``) showing done/total,
percent and items/s. When the stream is not a terminal (a batch job, ``> log 2>&1``, a
pipe) it writes plain progress lines instead, e.g.
``spot finding: 400/1000 frames (40 %), 38.0 frames/s``: one when at least
``log_interval_s`` (10 s) have passed since the previous line and the stage advanced by at
least ``log_fraction`` (10 %) of its total, and one at the latest every ``log_max_interval_s``
(30 s) while items keep finishing. :meth:`Progress.close` always prints one summary line per
stage, e.g. ``spot finding + azimuthal integration: 100 frames in 2.1 s (47.6 frames/s)``.
Every write is flushed, so a log file shows each line when it happens.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

LOG_INTERVAL_S = 10.0
"""Non-terminal mode: least time between two progress lines (s)."""
LOG_FRACTION = 0.1
"""Non-terminal mode: least advance (fraction of the total) between two lines."""
LOG_MAX_INTERVAL_S = 30.0
"""Non-terminal mode: a line after this long (s) even with less advance."""


class Progress:
    """Progress of one stage over ``total`` items (images, frames, refinement steps, cycles).

    Args:
        stage: stage name shown at the start of the line.
        total: number of items expected.
        stream: output stream (default ``sys.stderr``).
        enabled: ``False`` silences everything, including the summary.
        unit: item name for the rate ("images").
        min_interval_s: minimum time between redraws on a terminal.
        log_interval_s, log_fraction, log_max_interval_s: when a non-terminal stream gets a
            progress line (module docstring).
        clock: time source in seconds (tests pass a fake clock).
    """

    def __init__(self, stage: str, total: int, *, stream: TextIO | None = None,
                 enabled: bool = True, unit: str = "images", min_interval_s: float = 0.1,
                 log_interval_s: float = LOG_INTERVAL_S, log_fraction: float = LOG_FRACTION,
                 log_max_interval_s: float = LOG_MAX_INTERVAL_S,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.stage = stage
        self.total = int(total)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.unit = unit
        self.min_interval_s = min_interval_s
        self.log_interval_s = log_interval_s
        self.log_fraction = log_fraction
        self.log_max_interval_s = log_max_interval_s
        self.clock = clock
        self.done = 0
        self.t0 = clock()
        self._last_draw = 0.0
        self._last_log = self.t0
        self._done_at_log = 0
        self._closed = False
        try:
            self.tty = bool(self.stream.isatty())
        except (AttributeError, ValueError):
            self.tty = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(success=exc_type is None)

    @property
    def elapsed_s(self) -> float:
        return self.clock() - self.t0

    def rate(self) -> float:
        """Items per second so far (0 before any time has passed)."""
        dt = self.elapsed_s
        return self.done / dt if dt > 0 else 0.0

    def update(self, n: int = 1) -> None:
        """Record ``n`` more finished items; redraw on a terminal, or write a progress line
        to a non-terminal stream when one is due."""
        self.done += int(n)
        if not self.enabled:
            return
        now = self.clock()
        if self.tty:
            if now - self._last_draw >= self.min_interval_s or self.done >= self.total:
                self._last_draw = now
                self._draw()
            return
        if self.done >= self.total:
            return  # the summary line follows
        since = now - self._last_log
        advance = (self.done - self._done_at_log) / self.total if self.total > 0 else 1.0
        if ((since >= self.log_interval_s and advance >= self.log_fraction)
                or (since >= self.log_max_interval_s and self.done > self._done_at_log)):
            self._last_log, self._done_at_log = now, self.done
            self.stream.write(self.line() + "\n")
            self.stream.flush()

    def line(self) -> str:
        """One progress line: ``stage: done/total unit (pct %), rate unit/s``."""
        pct = 100.0 * self.done / self.total if self.total > 0 else 100.0
        return (f"{self.stage}: {self.done}/{self.total} {self.unit} ({pct:.0f} %), "
                f"{self.rate():.1f} {self.unit}/s")

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

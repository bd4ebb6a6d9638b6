"""Image selection (-s/-e/-t) and the progress bar."""

from __future__ import annotations

import io

import numpy as np
import pytest

from jfx.io.errors import InputError
from jfx.io.progress import Progress
from jfx.pipeline import select_images


@pytest.mark.parametrize("n,start,end,stride,expected", [
    (10, 0, None, 1, list(range(10))),
    (10, 1, 3, 2, [1, 3]),           # end inclusive
    (10, 1, 4, 2, [1, 3]),
    (10, 2, 2, 1, [2]),
    (10, 0, None, 4, [0, 4, 8]),
    (10, 9, None, 5, [9]),
])
def test_select_images(n, start, end, stride, expected):
    sel = select_images(n, start, end, stride)
    np.testing.assert_array_equal(sel.indices, expected)
    assert sel.indices.dtype == np.int64 and sel.warnings == ()


def test_end_beyond_data_is_clipped_with_warning():
    sel = select_images(5, 1, 50, 2)
    np.testing.assert_array_equal(sel.indices, [1, 3])
    assert sel.warnings == ("end image 50 is beyond the data; clipped to 4",)


@pytest.mark.parametrize("args,needle", [
    ((0, 0, None, 1), "no images"),
    ((5, 5, None, 1), "start image 5 is beyond the data"),
    ((5, 3, 2, 1), "end image 2 is before start image 3"),
    ((5, 0, None, 0), "stride must be >= 1"),
    ((5, -1, None, 1), "start image must be >= 0"),
])
def test_select_images_errors(args, needle):
    with pytest.raises(InputError, match=needle):
        select_images(*args)


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_non_tty_prints_only_the_summary():
    s = io.StringIO()
    with Progress("stage", 4, stream=s) as p:
        for _ in range(4):
            p.update()
    lines = s.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stage: 4 images in ")
    assert lines[0].endswith(" images/s)")


def test_progress_tty_draws_a_bar_and_rate():
    s = _Tty()
    p = Progress("stage", 2, stream=s, min_interval_s=0.0)
    p.update()
    assert "\rstage: [###############---------------] 1/2  50.0%" in s.getvalue()
    p.update()
    p.close()
    out = s.getvalue()
    assert "2/2 100.0%" in out and "images/s" in out and out.endswith(" images/s)\n")


def test_progress_failure_and_disabled():
    s = io.StringIO()
    with pytest.raises(RuntimeError):
        with Progress("stage", 3, stream=s) as p:
            p.update()
            raise RuntimeError
    assert s.getvalue() == ""  # no success summary for a failed stage
    s = _Tty()
    with Progress("stage", 3, stream=s, enabled=False) as p:
        p.update(3)
    assert s.getvalue() == ""

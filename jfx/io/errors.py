"""Errors raised by the shell (I/O, CLI) for unusable input.

An :class:`InputError` carries a one-line, user-facing message; the CLI prints it as
``jfjoch_process: error: <message>`` and exits with code 2 (no traceback, nothing written).
A :class:`ProcessingError` is a failure during processing (exit code 1); its message names
the stage and, where known, the image.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad usage or unusable input (exit code 2)."""

    exit_code = 2


class ProcessingError(Exception):
    """Failure during processing (exit code 1)."""

    exit_code = 1

"""All outputs of one prefix, replaced together or not at all (an *output set*).

A run writes several files under one output prefix (``<prefix>_process.h5``, the merged
``<prefix>.mtz|.cif|.hkl``, ``<prefix>_iterN_scale.dat``, ``<prefix>_scaling.html``). Each
is first written in full to its own temporary file ``.<name>.<pid>.<random>.tmp`` next to
it (:func:`new_temp_path`, with the umask-derived mode of a normal file) and
flushed to disk (``fsync``). Only when every file of the set is written does
:meth:`OutputSet.commit` move them into place:

1. A journal ``.<prefix name>.<pid>.commit`` (JSON: each temporary → final name with the
   temporary's inode, and the earlier outputs to remove) is written under a temporary name,
   fsynced and renamed into place. From here on the set is complete on disk.
2. SIGINT, SIGTERM and SIGHUP are deferred (their Python handlers are swapped for a
   recorder) from before the journal until after it is removed; a deferred signal is raised
   again at the end, so Ctrl-C / SIGTERM then stop the program with the new set in place.
3. Each temporary is renamed over its final name (:func:`os.replace`), then the earlier
   outputs of the prefix that this run does not write are removed, the directory is
   fsynced and the journal removed.

A failure (disk full, an exception, Ctrl-C, SIGTERM) before step 1 removes every temporary
file and leaves every earlier output untouched. A process killed (SIGKILL, power cut)
between steps 1 and 3 leaves its journal: the next output set or temporary file in that
directory, and :func:`jfx.io.process_h5.read_process_h5`, finds the journal of the dead
process and *rolls it forward* (:func:`recover`): a temporary that still exists is renamed
into place, one already renamed is recognised by its inode, the listed removals are done and
the journal is removed — the prefix then holds the complete new set. (A temporary that was
removed by hand cannot be rolled forward: its final file is removed too, so that no file of
the earlier run stays beside the new ones, and the recovery says so.)

Which files a prefix holds (one run's outputs): each program *owns* the outputs it can
write — ``jfjoch_process`` all of them (:data:`PROCESS_OUTPUTS`), ``jfjoch_scale`` the
scaling outputs (:data:`SCALE_OUTPUTS`: never the ``_process.h5`` that may be its input).
An owned file that an earlier run left and this run does not write (an earlier run with
``-M`` and this one without, another ``--scaling-output`` format, more
``_iterN_scale.dat`` iterations) is removed in the same commit.

Disk full: every byte goes through :func:`write_bytes` (plain Python I/O, no HDF5 on the
way), where ``ENOSPC`` / ``EDQUOT`` / ``EFBIG`` become one :class:`ProcessingError` line
``no space left on device while writing <file> (<size> to write, <size> free)``; the
HDF5 file is built in memory (:func:`jfx.io.process_h5.process_h5_image`) because HDF5
itself crashes after a failed write.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from jfx.io.errors import InputError, ProcessingError

PROCESS_OUTPUTS = (r"_process\.h5", r"\.mtz", r"\.cif", r"\.hkl", r"_iter\d+_scale\.dat",
                   r"_scaling\.html")
"""Files of a prefix owned by ``jfjoch_process`` (regular expressions after the prefix)."""

SCALE_OUTPUTS = PROCESS_OUTPUTS[1:]
"""Files of a prefix owned by ``jfjoch_scale`` (not the ``_process.h5``)."""

JOURNAL_SUFFIX = ".commit"
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
_CHUNK = 64 << 20  # bytes per write call
_DEFERRED = tuple(getattr(signal, s) for s in ("SIGINT", "SIGTERM", "SIGHUP")
                  if hasattr(signal, s))


def _size(n: float) -> str:
    """``n`` bytes for people: ``"27 kB"``, ``"178.7 MB"``, ``"77.6 GB"``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{max(n / 1e3, 0.001):.3g} kB"


def _free_bytes(directory: Path) -> float | None:
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    return float(st.f_bavail) * st.f_frsize


def write_error(final: str | os.PathLike, e: OSError, size: int | None = None) -> ProcessingError:
    """The one-line :class:`ProcessingError` for an ``OSError`` raised writing ``final``."""
    final = Path(final)
    if e.errno in _FULL:
        free = _free_bytes(final.parent)
        what = [f"{_size(size)} to write"] if size is not None else []
        if free is not None:
            what.append(f"{_size(free)} free")
        return ProcessingError(f"no space left on device while writing {final}"
                               + (f" ({', '.join(what)})" if what else ""))
    return ProcessingError(f"cannot write {final}: {e.strerror or type(e).__name__}")


def write_bytes(tmp: Path, data: bytes | bytearray | memoryview, final: Path) -> None:
    """Write ``data`` to the existing file ``tmp`` (in chunks) and fsync it.

    Raises:
        ProcessingError: one line naming ``final`` (disk full: the size to write and the
            free space).
    """
    view = memoryview(data).cast("B")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
        try:
            done = 0
            while done < len(view):
                done += os.write(fd, view[done:done + _CHUNK])
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as e:
        raise write_error(final, e, len(view)) from None


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """SIGINT/SIGTERM/SIGHUP recorded instead of handled inside the block, then raised
    again (once each) with the handlers they had. Only the main thread can do this; in
    another thread the block runs unprotected (the journal still covers a kill)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []

    def record(signum, frame):  # noqa: ARG001 - signal handler signature
        if signum not in got:
            got.append(signum)

    old = {}
    for s in _DEFERRED:
        with contextlib.suppress(ValueError, OSError, TypeError):
            h = signal.getsignal(s)
            if h is None:  # installed outside Python: cannot be restored, leave it
                continue
            signal.signal(s, record)
            old[s] = h
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        for s in got:
            signal.raise_signal(s)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _file_mode() -> int:
    """The mode a new regular file gets under the current umask (0644 for umask 022). Read
    from /proc where it is shown (setting the umask to read it is not thread-safe)."""
    try:
        with open("/proc/self/status") as fh:
            umask = next(int(ln.split()[1], 8) for ln in fh if ln.startswith("Umask:"))
    except (OSError, StopIteration, ValueError, IndexError):
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def new_temp_path(final: str | os.PathLike) -> Path:
    """An empty temporary file ``.<name>.<pid>.<random>.tmp`` next to ``final`` (its
    directory created) with the mode of a normal new file (umask-derived, e.g. 0644 — not
    the 0600 of :func:`tempfile.mkstemp`), so that the file renamed into place has it too.
    Commit journals of dead runs in that directory are rolled forward first
    (:func:`jfx.io.output_set.recover`); then temporary files of ``final`` left by a process
    that no longer runs (killed by SIGKILL, a crash, a power cut) are removed; those of a
    live process (another run writing the same output right now) are left alone."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    recover(final.parent)
    for old in final.parent.glob(f".{glob.escape(final.name)}.*.tmp"):
        parts = old.name[len(final.name) + 2:].split(".")
        if len(parts) >= 3 and parts[0].isdigit() and not _pid_alive(int(parts[0])):
            with contextlib.suppress(OSError):
                old.unlink()
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.{os.getpid()}.", suffix=".tmp",
                                dir=final.parent)
    try:
        os.fchmod(fd, _file_mode())
    finally:
        os.close(fd)
    return Path(name)


def _journal_pid(path: Path) -> int | None:
    parts = path.name.rsplit(".", 2)  # ".<prefix>", "<pid>", "commit"
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


def _roll_forward(journal: Path, spec: dict) -> list[str]:
    """Do the renames and removals of ``spec`` (idempotent); returns problems (lost
    temporaries); removes the journal."""
    d = journal.parent
    lost = []
    for tmp_name, final_name, ino in spec["moves"]:
        tmp, final = d / tmp_name, d / final_name
        if tmp.exists():
            os.replace(tmp, final)
            continue
        try:
            done = final.stat().st_ino == ino
        except FileNotFoundError:
            done = False
        if not done:  # the new file is gone: keep no file of the earlier run beside the set
            lost.append(final_name)
            with contextlib.suppress(FileNotFoundError):
                final.unlink()
    for name in spec.get("remove", ()):
        with contextlib.suppress(FileNotFoundError):
            (d / name).unlink()
    _fsync_dir(d)
    journal.unlink()
    _fsync_dir(d)
    return lost


def recover(directory: str | os.PathLike) -> list[str]:
    """Roll forward the commit journals that processes no longer running left in
    ``directory`` (see the module docstring). Returns one message per journal handled
    (empty: nothing found). Never raises for an unreadable directory or journal (a journal
    that cannot be parsed is left alone and reported)."""
    d = Path(directory)
    msgs: list[str] = []
    try:
        journals = sorted(d.glob(f".*{JOURNAL_SUFFIX}"))
    except OSError:
        return msgs
    for jt in d.glob(f".*{JOURNAL_SUFFIX}.tmp"):  # journals never completed: nothing moved
        pid = _journal_pid(jt.with_suffix(""))
        if pid is not None and pid != os.getpid() and not _pid_alive(pid):
            with contextlib.suppress(OSError):
                jt.unlink()
    for j in journals:
        pid = _journal_pid(j)
        if pid is None or pid == os.getpid() or _pid_alive(pid):
            continue
        try:
            spec = json.loads(j.read_text())
            finals = [m[1] for m in spec["moves"]]
            with signals_deferred():
                lost = _roll_forward(j, spec)
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            msgs.append(f"cannot complete the interrupted commit {j}: "
                        f"{getattr(e, 'strerror', None) or e}")
            continue
        msg = (f"completed the output set of an interrupted run (pid {pid}): "
               + ", ".join(finals))
        if lost:
            msg += f"; lost (removed, temporary file gone): {', '.join(lost)}"
        msgs.append(msg)
    return msgs


class OutputSet:
    """The outputs of one prefix, written to temporary files and moved into place together
    by :meth:`commit` (module docstring). Use :func:`output_set`.

    Args:
        prefix: output prefix (``<dir>/<name>``); every output lies in ``<dir>``.
        owned: regular expressions (after the prefix name) of the files of the prefix this
            program owns; those not written by this set are removed by the commit.
    """

    def __init__(self, prefix: str | os.PathLike, owned: Sequence[str] = ()) -> None:
        p = Path(os.fspath(prefix))
        self.directory = p.parent
        self.name = p.name
        self.owned = tuple(owned)
        self._temps: dict[Path, Path] = {}  # final -> temporary
        self.written: list[Path] = []  # finals, after commit
        self.removed: list[Path] = []  # earlier outputs removed by the commit
        self._journaled = False
        self._synced: set[Path] = set()  # temporaries already fsynced
        self.directory.mkdir(parents=True, exist_ok=True)
        self.recovered = recover(self.directory)
        self._remove_dead_temps()

    def _remove_dead_temps(self) -> None:
        """Temporary files of this prefix's owned outputs left by runs that no longer run
        (also of outputs this run will not write)."""
        if not self.owned:
            return
        rx = re.compile(r"\." + re.escape(self.name) + "(?:" + "|".join(self.owned)
                        + r")\.(\d+)\.[^.]+\.tmp")
        with contextlib.suppress(OSError):
            for n in os.listdir(self.directory):
                m = rx.fullmatch(n)
                if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
                    with contextlib.suppress(OSError):
                        (self.directory / n).unlink()

    def temp(self, final: str | os.PathLike) -> Path:
        """A new (empty) temporary file for ``final`` (in the prefix's directory), to be
        moved there by :meth:`commit`. A writer that needs a path writes it; see also
        :meth:`add`."""
        final = Path(final)
        if final.parent.resolve() != self.directory.resolve():
            raise ValueError(f"{final} is not in the output directory {self.directory}")
        final = self.directory / final.name
        old = self._temps.pop(final, None)
        if old is not None:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        try:
            tmp = new_temp_path(final)
        except OSError as e:
            raise write_error(final, e) from None
        self._temps[final] = tmp
        return tmp

    def add(self, final: str | os.PathLike, data: bytes | bytearray | memoryview | str) -> Path:
        """Write ``data`` (str: UTF-8) as the future ``final``; returns ``final``."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        tmp = self.temp(final)
        write_bytes(tmp, data, Path(final))
        self._synced.add(tmp)
        return Path(final)

    def add_with(self, final: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
        """Let ``writer(temporary path)`` write the future ``final`` (then fsynced)."""
        tmp = self.temp(final)
        try:
            writer(tmp)
        except OSError as e:
            raise write_error(final, e) from None
        return Path(final)

    def _stale(self) -> list[Path]:
        """Owned files of the prefix that this set does not write."""
        if not self.owned:
            return []
        rx = re.compile(re.escape(self.name) + "(?:" + "|".join(self.owned) + ")")
        mine = {f.name for f in self._temps}
        try:
            names = os.listdir(self.directory)
        except OSError:
            return []
        return sorted(self.directory / n for n in names
                      if n not in mine and rx.fullmatch(n) and (self.directory / n).is_file())

    def commit(self) -> None:
        """Move every temporary file into place and remove the stale owned files, as one
        step that a kill cannot leave half-done (module docstring)."""
        stale = self._stale()
        for final, tmp in self._temps.items():  # files written through temp(): to disk
            if tmp not in self._synced:
                try:
                    fd = os.open(tmp, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                except OSError as e:
                    raise write_error(final, e) from None
        moves = [(t.name, f.name, t.stat().st_ino) for f, t in self._temps.items()]
        spec = {"pid": os.getpid(), "prefix": self.name, "moves": moves,
                "remove": [p.name for p in stale]}
        journal = self.directory / f".{self.name}.{os.getpid()}{JOURNAL_SUFFIX}"
        jtmp = self.directory / f"{journal.name}.tmp"
        _fsync_dir(self.directory)  # the temporaries' names are durable before the journal
        with signals_deferred():
            try:
                fd = os.open(jtmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                try:
                    os.write(fd, json.dumps(spec).encode())
                    os.fsync(fd)
                finally:
                    os.close(fd)
                os.replace(jtmp, journal)
            except OSError as e:
                with contextlib.suppress(FileNotFoundError):
                    jtmp.unlink()
                raise write_error(journal, e) from None
            # from here on the new set is complete on disk: finish it (or the next run
            # will: the temporaries are no longer ours to discard)
            self._journaled = True
            _fsync_dir(self.directory)
            _roll_forward(journal, spec)
            self.written = list(self._temps)
            self.removed = stale
            self._temps.clear()

    def discard(self) -> None:
        """Remove every temporary file; earlier outputs stay untouched. (After the journal
        is written the temporaries belong to it: a failure then leaves them for
        :func:`recover`.)"""
        if self._journaled:
            return
        for tmp in self._temps.values():
            with contextlib.suppress(OSError):
                tmp.unlink()
        self._temps.clear()


@contextlib.contextmanager
def output_set(prefix: str | os.PathLike, owned: Sequence[str] = ()) -> Iterator[OutputSet]:
    """An :class:`OutputSet` committed when the block ends normally and discarded (every
    temporary removed, nothing old touched) when it raises — including KeyboardInterrupt
    and the SIGTERM exception of the CLI.

    Example::

        with output_set(prefix, PROCESS_OUTPUTS) as outs:
            outs.add(f"{prefix}_process.h5", image_bytes)
            outs.add(f"{prefix}.mtz", mtz_bytes)
        print(outs.written, outs.removed)
    """
    s = OutputSet(prefix, owned)
    try:
        yield s
    except BaseException:
        s.discard()
        raise
    try:
        s.commit()
    except BaseException:
        s.discard()
        raise


def write_one(final: str | os.PathLike, data: bytes | bytearray | memoryview | str) -> Path:
    """Write a single file atomically through an output set of its own (owns nothing
    else): same disk-full handling and crash safety as a whole set."""
    final = Path(final)
    with output_set(final) as s:
        s.add(final, data)
    return final


def check_writable(prefix: str | os.PathLike) -> None:
    """Raise :class:`InputError` (one line) when outputs ``<prefix>…`` cannot be written:
    the directory cannot be created (e.g. a regular file in the way) or a file cannot be
    created in it (read-only, no permission, full). Creates the directory; leaves no file."""
    parent = Path(os.fspath(prefix)).parent
    blocker = next((p for p in (parent, *parent.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise InputError(f"cannot write outputs under {str(blocker)!r} (-o {os.fspath(prefix)}): "
                         "it is a file, not a directory")
    try:
        parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".jfx-write-test.", suffix=".tmp", dir=parent)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise InputError(f"cannot write outputs to {str(parent) or '.'!r} (-o {os.fspath(prefix)}): "
                         f"{e.strerror or type(e).__name__}") from None


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path (:func:`new_temp_path`) for a writer that needs a file name
    (e.g. h5py streaming frames); move it over ``final`` when the body finished without an
    exception, else remove it and leave ``final`` untouched."""
    final = Path(final)
    tmp = new_temp_path(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise

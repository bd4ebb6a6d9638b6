"""Chunked frame reading with bounded read-ahead: synchronous, one thread, or processes.

:func:`iter_chunks` delivers ``(indices (k,) int64, frames (k, ny, nx) native dtype)`` in
order from a :class:`~jfx.io.frame_reader.FrameReader`:

* ``workers=0`` (or ``prefetch=0``): read in the caller;
* ``workers=1`` (or a single chunk): one background thread, at most ``prefetch`` chunks
  queued;
* ``workers>1``: that many reader *processes* (h5py serialises on a global lock, so only
  processes scale). Each is started with the ``spawn`` context, opens the files itself from
  the plain-dict spec and reads every ``workers``-th chunk into its ring of shared-memory
  slots. The process entry point is :func:`jfx.io.frame_reader.reader_process_main`, which the
  children load by file path (:func:`jfx.io.frame_reader.reader_process`) without importing jfx or
  JAX; :func:`no_main_reimport` keeps them from re-running the parent's ``__main__``.

Unreadable images (a chunk that fails :func:`jfx.io.frame_reader.check_bitshuffle_chunk` or that
HDF5 cannot decode): with ``unreadable=None`` the first one is re-raised in the consumer as
a one-line :class:`~jfx.io.errors.InputError` naming the image and the file; with an
``unreadable`` dict the image is delivered filled with the error value (every pixel
invalid) and ``unreadable[image]`` holds the message, set before its chunk is yielded.

A reader process that dies (a decoder crash: signal) is reported with the images of the
chunk it was reading and the file: as an :class:`InputError`, or, with ``unreadable``, by
marking that chunk's images unreadable and starting a new reader for its remaining chunks.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import queue
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from jfx.io.errors import InputError
from jfx.io.frame_reader import FrameReader, FrameReadError, error_fill, one_line, reader_process

Chunk = tuple[np.ndarray, np.ndarray]


def iter_chunks(src: FrameReader, chunks: list[list[int]], *, image_shape: tuple[int, int],
                dtype: np.dtype, workers: int, prefetch: int, path: Path,
                unreadable: dict[int, str] | None = None) -> Iterator[Chunk]:
    """Iterate over ``chunks`` (lists of image numbers) of ``src``, reading ahead.

    Args:
        src: the master's frame reader (its ``spec`` is sent to reader processes).
        chunks: image numbers per chunk, delivered in this order.
        image_shape: (ny, nx); dtype: native pixel dtype of the delivered arrays.
        workers: 0 = synchronous, 1 = one thread, >1 = that many processes.
        prefetch: at most this many chunks are read ahead (memory bound ≈
            (prefetch + workers) · chunk size frames).
        path: master file (messages).
        unreadable: None: an unreadable image raises :class:`InputError`. A dict: it
            receives ``image → message`` of each unreadable image (delivered filled with
            the error value) before the chunk holding it is yielded.
    """
    if not chunks:
        return iter(())
    if workers <= 0 or prefetch <= 0:
        return _iter_sync(src, chunks, image_shape, dtype, unreadable)
    if workers == 1 or len(chunks) == 1:
        return _iter_thread(src, chunks, prefetch, image_shape, dtype, path, unreadable)
    return _iter_procs(src, chunks, min(workers, len(chunks)), prefetch, image_shape,
                       dtype, path, unreadable)


def _read(src: FrameReader, out: np.ndarray, c: list[int], mark: bool) -> dict[int, str]:
    bad: dict[int, str] = {}
    if mark:
        src.read_into(out, c, bad)
    else:
        src.read_into(out, c)
    return bad


def _iter_sync(src, chunks, image_shape, dtype, unreadable) -> Iterator[Chunk]:
    for c in chunks:
        out = np.empty((len(c),) + image_shape, dtype=dtype)
        try:
            bad = _read(src, out, c, unreadable is not None)
        except FrameReadError as e:
            raise InputError(str(e)) from None
        if bad:
            unreadable.update(bad)
        yield np.asarray(c, dtype=np.int64), out


def _iter_thread(src, chunks, prefetch, image_shape, dtype, path, unreadable) -> Iterator[Chunk]:
    q: queue.Queue = queue.Queue(maxsize=max(1, prefetch))
    stop = threading.Event()
    mark = unreadable is not None

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run():
        try:
            for c in chunks:
                if stop.is_set():
                    return
                out = np.empty((len(c),) + image_shape, dtype=dtype)
                bad = _read(src, out, c, mark)
                if not put(("ok", c, (out, bad))):
                    return
        except BaseException as e:  # noqa: BLE001 - re-raised in the consumer
            put(("error", None, e))
            return
        put(("done", None, None))

    th = threading.Thread(target=run, name="jfx-reader", daemon=True)
    th.start()
    try:
        while True:
            kind, c, payload = q.get()
            if kind == "done":
                return
            if kind == "error":
                if isinstance(payload, (InputError, FrameReadError)):
                    raise InputError(str(payload)) from None
                raise InputError(f"reading {path} failed: {one_line(payload)}") from None
            out, bad = payload
            if bad:
                unreadable.update(bad)
            yield np.asarray(c, dtype=np.int64), out
    finally:
        stop.set()
        th.join(timeout=10)


def _signal_name(exitcode: int | None) -> str:
    """``signal 11 (SIGSEGV)`` / ``exit code 3`` of a finished process."""
    if exitcode is None:
        return "no exit code"
    if exitcode < 0:
        try:
            return f"signal {-exitcode} ({signal.Signals(-exitcode).name})"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def _chunk_files(src: FrameReader, c: list[int]) -> str:
    files = list(dict.fromkeys(src.file_of(i) for i in c))
    return "file " + files[0] if len(files) == 1 else "files " + ", ".join(files)


def _images(c: list[int]) -> str:
    return f"image {c[0]}" if len(c) == 1 else f"images {c[0]}-{c[-1]}"


def _iter_procs(src, chunks, nw, prefetch, image_shape, dtype, path,
                unreadable) -> Iterator[Chunk]:
    from multiprocessing import shared_memory

    spec = src.spec
    mark = unreadable is not None
    ctx = mp.get_context("spawn")
    n_slots = max(1, math.ceil(prefetch / nw))
    cmax = max(len(c) for c in chunks)
    slot_bytes = cmax * image_shape[0] * image_shape[1] * dtype.itemsize
    stop = ctx.Event()
    shms, sems, queues, procs, bufs = [], [], [], [], []

    def start(w: int, first: int):
        pr = reader_process(ctx, f"jfx-reader-{w}",
                            (spec, chunks, w, nw, shms[w].name, n_slots, sems[w], queues[w],
                             stop, first, mark))
        pr.start()
        return pr

    try:
        for w in range(nw):
            shm = shared_memory.SharedMemory(create=True, size=max(1, n_slots * slot_bytes))
            shms.append(shm)
            bufs.append(np.ndarray((n_slots, cmax) + image_shape, dtype=dtype, buffer=shm.buf))
            sems.append(ctx.Semaphore(n_slots))
            queues.append(ctx.Queue())
        with no_main_reimport():
            for w in range(nw):
                procs.append(start(w, w))
        for c in range(len(chunks)):
            w = c % nw
            msg = None
            while msg is None:
                try:
                    msg = queues[w].get(timeout=0.5)
                except queue.Empty:
                    if procs[w].is_alive():
                        continue
                    try:  # a message flushed just before the process ended
                        msg = queues[w].get(timeout=1.0)
                    except queue.Empty:
                        pass
                    if msg is not None:
                        break
                    # the reader died while reading chunk c (its earlier chunks were all
                    # delivered, in order): name those images, then go on without them
                    died = (f"reader process {w} for {path} died "
                            f"({_signal_name(procs[w].exitcode)}) while reading "
                            f"{_images(chunks[c])} ({_chunk_files(src, chunks[c])})")
                    if not mark:
                        raise InputError(died) from None
                    procs[w].join(timeout=1)
                    sems[w] = ctx.Semaphore(n_slots)  # every slot of w is consumed and free
                    if c + nw < len(chunks):
                        with no_main_reimport():
                            procs[w] = start(w, c + nw)
                    msg = ("died", c, died)
            kind, cc, payload = msg[:3]
            if kind == "error":
                raise InputError(payload)
            assert cc == c
            k = len(chunks[c])
            if kind == "died":
                out = np.full((k,) + image_shape, error_fill(dtype), dtype=dtype)
                unreadable.update({i: payload for i in chunks[c]})
            else:
                out = bufs[w][payload, :k].copy()
                sems[w].release()
                if msg[3]:
                    unreadable.update(msg[3])
            yield np.asarray(chunks[c], dtype=np.int64), out
    finally:
        stop.set()
        for s in sems:  # wake workers blocked on a full ring
            for _ in range(n_slots):
                s.release()
        for pr in procs:
            pr.join(timeout=5)
            if pr.is_alive():
                pr.terminate()
                pr.join(timeout=5)
        for q_ in queues:
            q_.close()
            q_.cancel_join_thread()
        bufs.clear()
        for shm in shms:
            shm.close()
            shm.unlink()


_MAIN_LOCK = threading.Lock()


@contextlib.contextmanager
def no_main_reimport():
    """Start spawned reader processes without re-running the parent's ``__main__``.

    ``multiprocessing``'s spawn start method re-imports the main script in every child
    (fatal for unguarded scripts, ``python -`` or notebooks). The reader processes only need
    :mod:`jfx.io.frame_reader` (loaded by path), so the main module's ``__spec__``/``__file__`` are
    hidden while the children are started and restored afterwards.
    """
    main = sys.modules.get("__main__")
    with _MAIN_LOCK:
        if main is None:
            yield
            return
        missing = object()
        saved = {k: main.__dict__.get(k, missing) for k in ("__spec__", "__file__")}
        main.__dict__["__spec__"] = None
        main.__dict__.pop("__file__", None)
        try:
            yield
        finally:
            for k, v in saved.items():
                if v is missing:
                    main.__dict__.pop(k, None)
                else:
                    main.__dict__[k] = v

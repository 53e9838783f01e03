"""Progress of long work: the log, the reporter callback of the running stage, a heartbeat.

The model over many frames, and minimisation and dynamics inside one OpenMM call, run for
minutes on a big system; the lines said here go to the ``openmm_herobm`` logger and to the
stage of the pipeline's reporters (:func:`reporting`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import time

#: stage messages ("hydrogens ...", "hydrogens done in 3.2 s"): the ``herobm`` command shows them
#: on stderr, a library user with ``logging.basicConfig(level=logging.INFO)``
log = logging.getLogger("openmm_herobm")

#: where progress inside a long stage goes (a reporter's stage, see :func:`reporting`), besides the log
_progress = contextvars.ContextVar("herobm_progress", default=None)


@contextlib.contextmanager
def reporting(callback):
    """Within the block, progress inside long work (each L-BFGS pass, each block of dynamics) is
    also passed to ``callback(text)``: the pipeline's reporters hear about it."""
    token = _progress.set(callback)
    try:
        yield
    finally:
        _progress.reset(token)


def say(message: str, *args) -> None:
    log.info(message, *args)
    callback = _progress.get()
    if callback is not None:
        callback((message % args).strip())


#: s between "still running" lines inside one L-BFGS pass (a pass over 10^5 atoms takes minutes)
PROGRESS_SECONDS = 30.0


@contextlib.contextmanager
def heartbeat(what: str):
    """While the block runs, a line every :data:`PROGRESS_SECONDS` saying how long it has run.

    A thread, because OpenMM's minimiser cannot call back into Python here: a
    MinimizationReporter holds the GIL, and openmm-torch's force then refuses to run."""
    import threading

    callback, start, done = _progress.get(), time.perf_counter(), threading.Event()

    def beat():
        while not done.wait(PROGRESS_SECONDS):
            message = f"  {what} running, {time.perf_counter() - start:.0f} s"
            log.info(message)
            if callback is not None:
                callback(message.strip())

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()

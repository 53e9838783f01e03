"""Output files: checked before any work, written to temporaries, committed together.

* :func:`check_outputs` refuses, in one line and before anything is loaded, an output that is
  a folder, lies in a folder that does not exist or cannot be written, is given twice, or is
  one of the run's inputs.
* :func:`output_files` collects the files of one run: each is written to a temporary beside
  its target (``.herobm-tmp-<random>-<name>``, so a stray one is recognisable) and all are
  renamed into place only when the block ends without an exception, with SIGINT/SIGTERM/SIGHUP
  held during the renames; an exception or a signal (the CLI turns SIGTERM and SIGHUP into
  exceptions) removes every temporary instead.  An interrupted run therefore leaves the
  previous run's complete set of files, never a mix of two runs.
* :func:`atomic_output` is the same for one file.

A temporary's name is recorded before the file is created, so no signal can arrive between
creating it and guarding it; only SIGKILL (or a power cut) can leave one behind.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import threading

from ..errors import HeroBMError

TEMP_PREFIX = ".herobm-tmp-"
HELD_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

__all__ = ["TEMP_PREFIX", "OutputFiles", "atomic_output", "check_output_folder", "check_outputs", "output_files"]


# ---------------------------------------------------------------- checks before work
def check_outputs(outputs, inputs=(), *, create_folders: bool = False) -> None:
    """Raise :class:`HeroBMError` for an output path that cannot be written or would overwrite an input.

    ``outputs``/``inputs``: paths (None, and inputs that are no paths such as in-memory
    trajectories, are skipped).  An output's folder must exist (``create_folders``: or be
    creatable, see :func:`check_output_folder`) and be writable: it is probed with a temporary
    file that is removed at once; nothing else is created.
    """
    targets: dict[str, str] = {}
    for path in outputs:
        if path is None:
            continue
        name = os.fspath(path)
        real = os.path.realpath(name)
        if os.path.isdir(real):
            raise HeroBMError(f"{name}: is a folder; give a file name for this output")
        if create_folders and not os.path.exists(os.path.dirname(real)):
            check_output_folder(os.path.dirname(real))
        else:
            _check_folder(name, os.path.dirname(real))
        if real in targets:
            raise HeroBMError(f"{name}: given twice as an output (also as {targets[real]}); give each output its "
                              f"own file")
        targets[real] = name
        for source in inputs:
            if _same_file(real, source):
                same = "" if os.fspath(source) == name else f" ({os.fspath(source)})"
                raise HeroBMError(f"{name}: is also an input of this run{same}; writing it would destroy the "
                                  f"input: give another output file")


def check_output_folder(folder) -> None:
    """Raise :class:`HeroBMError` unless ``folder`` is a writable folder or can be created (its nearest
    existing parent is a writable folder); nothing is created."""
    name = os.fspath(folder)
    real = os.path.realpath(name)
    if os.path.exists(real) and not os.path.isdir(real):
        raise HeroBMError(f"{name}: is a file, not a folder; give a folder for the outputs")
    existing = real
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise HeroBMError(f"{name}: cannot be created, {existing} is a file; give another output folder")
    _check_folder(name, existing)


def _check_folder(name: str, folder: str) -> None:
    if not os.path.isdir(folder):
        what = "is a file, not a folder" if os.path.exists(folder) else "does not exist; create it first"
        raise HeroBMError(f"{name}: output folder {folder} {what}")
    probe = _TempNames()
    try:
        probe.create(os.path.join(folder, "probe"))
    except OSError as exc:
        raise HeroBMError(f"{name}: cannot write in output folder {folder} ({exc.strerror}); choose a folder "
                          f"you can write to") from None
    finally:
        probe.remove_all()


def _same_file(real: str, source) -> bool:
    if not isinstance(source, (str, bytes, os.PathLike)):
        return False
    other = os.fspath(source)
    if os.path.realpath(other) == real:
        return True
    try:
        return os.path.samefile(real, other)  # hard links
    except OSError:  # one of them does not exist
        return False


# ---------------------------------------------------------------- temporaries
class _TempNames:
    """Temporaries created here; a name is listed before its file exists, so that cleanup after a
    signal at any point finds every file."""

    def __init__(self):
        self.names: list[str] = []

    def create(self, target: str) -> str:
        folder, base = os.path.split(target)
        while True:
            tmp = os.path.join(folder, f"{TEMP_PREFIX}{secrets.token_hex(6)}-{base[-180:]}")  # keeps the extension
            self.names.append(tmp)
            try:
                os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # mode: the umask's
                return tmp
            except FileExistsError:  # someone else's (a 2^-48 chance): not ours to remove
                self.names.remove(tmp)
            except BaseException:
                self.remove(tmp)
                raise

    def remove(self, tmp: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        self.names.remove(tmp)

    def remove_all(self) -> None:
        while self.names:
            self.remove(self.names[-1])


class OutputFiles:
    """The files of one run (see :func:`output_files`)."""

    def __init__(self):
        self._temps = _TempNames()
        self._pending: list[tuple[str, str]] = []  # (temporary, target), written and waiting for commit

    @contextlib.contextmanager
    def file(self, path):
        """Yield a temporary path to write ``path``'s content to; it is moved onto ``path`` at commit."""
        target = os.path.abspath(os.fspath(path))
        tmp = self._temps.create(target)
        try:
            yield tmp
        except BaseException:
            self._temps.remove(tmp)
            raise
        self._pending.append((tmp, target))

    def commit(self) -> None:
        """Rename every written temporary onto its target, signals held so the set lands whole."""
        pending, self._pending = self._pending, []
        with _signals_held():
            try:
                for tmp, target in pending:
                    os.replace(tmp, target)
                    self._temps.names.remove(tmp)
            except BaseException:
                # half of a set in place would mix two runs: leave none of it
                for _, target in pending:
                    with contextlib.suppress(OSError):
                        os.remove(target)
                raise

    def discard(self) -> None:
        """Remove every temporary not committed."""
        self._pending = []
        self._temps.remove_all()


@contextlib.contextmanager
def output_files():
    """Collect the output files of one run: ``with output_files() as out: with out.file(path) as tmp: ...``.

    All files are renamed into place together when the block ends normally; on an exception
    (or an interrupt) none is, and every temporary is removed.
    """
    files = OutputFiles()
    try:
        yield files
        files.commit()
    finally:
        files.discard()


@contextlib.contextmanager
def atomic_output(path, files: OutputFiles | None = None):
    """Yield a temporary path in the destination folder; on success it is moved onto ``path``
    (os.replace), on any error deleted, so no partial file is left.  With ``files`` (an
    :func:`output_files` set) the move waits for that set's commit."""
    if files is not None:
        with files.file(path) as tmp:
            yield tmp
        return
    with output_files() as single, single.file(path) as tmp:
        yield tmp


@contextlib.contextmanager
def _signals_held():
    """Hold SIGINT/SIGTERM/SIGHUP for the block (main thread only: Python runs its signal handlers
    there) and deliver them to their own handlers after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {}
    try:
        for sig in HELD_SIGNALS:
            handler = signal.getsignal(sig)
            if handler is not None:  # None: installed outside Python, cannot be put back
                previous[sig] = signal.signal(sig, lambda s, _frame: caught.append(s))
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(caught):
            handler = previous[sig]
            if callable(handler):
                handler(sig, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(sig)

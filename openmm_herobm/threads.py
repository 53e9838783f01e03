"""The one place that decides how many threads torch, OpenMM and BLAS/OpenMP use.

Why it matters: torch (OpenMP) and OpenMM's CPU platform each start a pool as wide as the
machine, and OpenMP threads spin while they wait for work.  Two such processes on the same
cores, or a torch model beside an OpenMM minimisation, then burn each other's time: one mix
on 2 cores ran 11x slower where a fair share would be 3x.  The policy:

* every pool of a process is ``threads`` wide (default: the cores this process may run on,
  ``os.sched_getaffinity``; ``HEROBM_THREADS`` or ``--threads`` override it);
* idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``), so a busy
  neighbour costs a fair share and no more;
* a batch worker is one process with one thread (:mod:`openmm_herobm.batch`): parallelism comes
  from processes, which share cores fairly.

:func:`configure` applies the policy (``openmm_herobm.set_threads``); the ``herobm`` command calls it
before it imports torch or OpenMM (the environment variables only reach libraries loaded after
them; torch's and OpenMM's own counts are also set directly when they are already loaded).  A
library call that finds it not applied only makes idle threads sleep (:func:`library_defaults`)
and leaves the counts to the caller.
"""

from __future__ import annotations

import os
import sys

#: environment variable holding the thread count (the ``--threads`` option sets it)
ENV = "HEROBM_THREADS"
_OPENMP_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")

_configured: int | None = None


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity; a SLURM/cgroup allocation shows here)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # macOS
        return max(os.cpu_count() or 1, 1)


def default_threads() -> int:
    """``HEROBM_THREADS`` when set, else :func:`available_cores`."""
    value = os.environ.get(ENV, "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            n = 0
        if n < 1:
            from .errors import HeroBMError

            raise HeroBMError(f"{ENV}={value!r}: give a whole number of threads >= 1")
        return n
    return available_cores()


def configure(threads: int | None = None) -> int:
    """Apply the thread policy with ``threads`` per pool (None: :func:`default_threads`); returns it.

    Sets the OpenMP/BLAS environment (for libraries not loaded yet), torch's intra-op threads
    and OpenMM's CPU platform default ``Threads`` (when those are loaded, or cheap to load).
    """
    global _configured
    n = default_threads() if threads is None else int(threads)
    if n < 1:
        from .errors import HeroBMError

        raise HeroBMError(f"--threads {threads}: give a whole number of threads >= 1")
    os.environ[ENV] = str(n)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle OpenMP threads sleep, never spin
    for name in _OPENMP_ENV:
        os.environ[name] = str(n)
    os.environ["OPENMM_CPU_THREADS"] = str(n)
    if "torch" in sys.modules:
        import torch

        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(1)  # only allowed before torch's first parallel work
        except RuntimeError:
            pass
    if "openmm" in sys.modules:
        _openmm_threads(n)
    _configured = n
    return n


def library_defaults() -> None:
    """What a library call does before it loads torch: idle OpenMP threads sleep.  The counts stay
    the caller's (``torch.set_num_threads``, ``OMP_NUM_THREADS``) until :func:`configure` is called."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _openmm_threads(n: int) -> None:
    import openmm as mm

    try:
        mm.Platform.getPlatformByName("CPU").setPropertyDefaultValue("Threads", str(n))
    except Exception:  # no CPU platform in this build
        pass


def openmm_platform_ready(platform) -> None:
    """Give a CPU platform the configured thread count, and forces summed in a fixed order whatever
    the thread count (its threads otherwise add their parts in the order they finish); one thread
    gives bit-identical runs, more leave ~1e-5 nm force-order noise that minimisation can grow;
    called where the pipeline picks its platform."""
    if platform.getName() == "CPU":
        platform.setPropertyDefaultValue("DeterministicForces", "true")
        if _configured is not None:
            platform.setPropertyDefaultValue("Threads", str(_configured))

"""The OpenMM platform: the one asked for, else the fastest here, with the thread count set."""

from __future__ import annotations

import openmm as mm

from ..errors import HeroBMError


def choose_platform(name: str | mm.Platform | None = None) -> mm.Platform:
    """The named platform (or the ``openmm.Platform`` given), else the fastest available one (CUDA, OpenCL, CPU, Reference); a CPU
    platform gets the thread count of :mod:`openmm_herobm.threads`."""
    from ..threads import openmm_platform_ready

    platform = _choose_platform(name)
    openmm_platform_ready(platform)
    return platform


def _choose_platform(name) -> mm.Platform:
    if isinstance(name, mm.Platform):
        return name
    available = [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]
    if name:
        if name not in available:
            raise HeroBMError(f"OpenMM platform {name!r} is not available here (available: {', '.join(available)})")
        return mm.Platform.getPlatformByName(name)
    for candidate in ("CUDA", "HIP", "OpenCL", "CPU", "Reference"):
        if candidate in available:
            return mm.Platform.getPlatformByName(candidate)
    raise HeroBMError("no OpenMM platform is available")

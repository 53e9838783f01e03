"""Inference on systems of any size: spatial chunks with a one-cutoff halo.

The network is strictly local, so predicting the beads of a cube from the beads in the
cube grown by one cutoff gives exactly what the whole system would give; memory is
bounded by the chunk size, not the system size.
"""

from __future__ import annotations

import numpy as np
import torch


def plain_execution():
    """The context to run a deployed module in: TorchScript's profiling executor spends its first
    two calls of a module profiling and optimising it (0.15 s each for the protein model, on one
    core) and the optimised graph is no faster for this network (20 ms per 337-bead frame either
    way, the same numbers bit for bit), so a process that backmaps one structure paid 0.3 s for
    nothing."""
    return torch.jit.optimized_execution(False)


def predict_chunked(module, pos: torch.Tensor, bead_type: torch.Tensor, cutoff: float,
                    chunk: float = 40.0, max_unchunked: int = 4000):
    """Slot vectors ``(N, S, 3)`` and dihedrals ``(N, 4)`` for every bead (Angstrom).

    Systems up to ``max_unchunked`` beads go in one call; larger ones are cut into cubes
    of edge ``chunk`` A, each predicted from the beads within ``cutoff`` of the cube.
    """
    n = pos.shape[0]
    with torch.no_grad(), plain_execution():
        if n <= max_unchunked:
            return module.predict(pos, bead_type, torch.arange(n))
        xyz = pos.numpy()
        cell = np.floor((xyz - xyz.min(0)) / chunk).astype(np.int64)
        keys, owner = np.unique(cell, axis=0, return_inverse=True)
        vectors = dihedrals = None
        lo_all = xyz.min(0)
        for k, key in enumerate(keys):
            centers = np.nonzero(owner.reshape(-1) == k)[0]
            lo = lo_all + key * chunk - cutoff
            hi = lo_all + (key + 1) * chunk + cutoff
            inside = np.nonzero(np.all((xyz >= lo) & (xyz < hi), axis=1))[0]
            local = np.searchsorted(inside, centers)  # centres are inside their own halo box
            v, d = module.predict(pos[inside], bead_type[inside], torch.as_tensor(local))
            if vectors is None:
                vectors = torch.zeros(n, v.shape[1], 3, dtype=v.dtype)
                dihedrals = torch.zeros(n, d.shape[1], dtype=d.dtype)
            vectors[torch.as_tensor(centers)] = v
            dihedrals[torch.as_tensor(centers)] = d
        return vectors, dihedrals

"""Hierarchical reconstruction: place atoms level by level from per-bead vectors.

Shapes (F frames, N beads, S slots per bead, M atoms):

* ``bead_pos``   ``(F, N, 3)``
* ``vectors``    ``(F, N, S, 3)``: slot ``s`` of bead ``n`` points from its anchor to its atom
* ``slot_anchor`` ``(N, S)``: -1 = anchored on the bead, else the anchor slot of the same bead
* ``slot_level``  ``(N, S)``: hierarchy level, 0 = empty slot
* ``slot_atom``   ``(N, S)``: output atom index, -1 = empty or unusable slot
* ``slot_weight`` ``(N, S)``: weight of this bead's estimate of a shared atom

Written in torch and scriptable (``torch.jit.script``) so a deployed model can carry
the reconstruction inside it.  Units are whatever ``bead_pos`` and ``vectors`` use.
"""

from __future__ import annotations

import numpy as np
import torch


def place_slots(bead_pos: torch.Tensor, vectors: torch.Tensor, slot_anchor: torch.Tensor,
                slot_level: torch.Tensor) -> torch.Tensor:
    """Absolute position of every slot, ``(F, N, S, 3)``, walking the hierarchy level by level."""
    pos = bead_pos.unsqueeze(2) + vectors  # levels 0 and 1 sit on the bead
    n_levels = int(slot_level.max().item()) if slot_level.numel() > 0 else 0
    index = slot_anchor.clamp(min=0).unsqueeze(0).unsqueeze(-1).expand(pos.shape[0], -1, -1, 3)
    for level in range(2, n_levels + 1):
        anchor_pos = torch.gather(pos, 2, index)
        pos = torch.where((slot_level == level).unsqueeze(0).unsqueeze(-1), anchor_pos + vectors, pos)
    return pos


def gather_atoms(slot_pos: torch.Tensor, slot_atom: torch.Tensor, slot_weight: torch.Tensor,
                 n_atoms: int) -> torch.Tensor:
    """Atom positions ``(F, M, 3)``: the weighted mean of every bead's estimate of each atom."""
    n_frames = slot_pos.shape[0]
    valid = slot_atom >= 0
    weight = torch.where(valid, slot_weight, torch.zeros_like(slot_weight)).to(slot_pos.dtype)
    index = slot_atom.clamp(min=0).reshape(-1)
    summed = torch.zeros(n_frames, n_atoms, 3, dtype=slot_pos.dtype, device=slot_pos.device)
    summed.index_add_(1, index, (slot_pos * weight.unsqueeze(0).unsqueeze(-1)).reshape(n_frames, -1, 3))
    total = torch.zeros(n_atoms, dtype=slot_pos.dtype, device=slot_pos.device)
    total.index_add_(0, index, weight.reshape(-1))
    return summed / total.clamp(min=1e-12).unsqueeze(0).unsqueeze(-1)


def reconstruct(bead_pos: torch.Tensor, vectors: torch.Tensor, slot_anchor: torch.Tensor,
                slot_level: torch.Tensor, slot_atom: torch.Tensor, slot_weight: torch.Tensor,
                n_atoms: int) -> torch.Tensor:
    """Atom positions ``(F, M, 3)`` from bead positions and per-slot vectors."""
    slot_pos = place_slots(bead_pos, vectors, slot_anchor, slot_level)
    return gather_atoms(slot_pos, slot_atom, slot_weight, n_atoms)


def bead_subset(weights, beads: np.ndarray):
    """The rows of the sparse bead-weight matrix (``SystemMapping.weights``) for ``beads`` (sorted
    bead indices), in :func:`recenter`'s form: ``(bead index, rows, cols, vals)`` as tensors, rows
    numbered within ``beads``."""
    w = weights.tocoo()
    on = np.isin(w.row, beads)
    return (torch.as_tensor(beads), torch.as_tensor(np.searchsorted(beads, w.row[on])),
            torch.as_tensor(w.col[on]), torch.as_tensor(w.data[on], dtype=torch.float64))


def recenter(atom_pos: torch.Tensor, bead_pos: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
             vals: torch.Tensor, iterations: int = 20) -> torch.Tensor:
    """Shift atoms so that their mapped beads coincide with ``bead_pos``.

    ``rows, cols, vals`` is the sparse bead-weight matrix W (``SystemMapping.weights``).
    Each iteration applies the minimum-norm correction of a diagonal approximation
    of ``W W^T``; it is exact in one step for beads that share no atom and converges
    in a few steps for shared atoms.
    """
    n_frames, n_atoms = atom_pos.shape[0], atom_pos.shape[1]
    n_beads = bead_pos.shape[1]
    norm = torch.zeros(n_beads, dtype=atom_pos.dtype, device=atom_pos.device)
    norm.index_add_(0, rows, vals * vals)
    pos = atom_pos
    for _ in range(iterations):
        mapped = torch.zeros(n_frames, n_beads, 3, dtype=pos.dtype, device=pos.device)
        mapped.index_add_(1, rows, pos[:, cols] * vals.unsqueeze(0).unsqueeze(-1))
        delta = (bead_pos - mapped) / norm.clamp(min=1e-12).unsqueeze(0).unsqueeze(-1)
        shift = torch.zeros(n_frames, n_atoms, 3, dtype=pos.dtype, device=pos.device)
        shift.index_add_(1, cols, delta[:, rows] * vals.unsqueeze(0).unsqueeze(-1))
        # atoms shared by k beads receive k corrections: average them
        count = torch.zeros(n_atoms, dtype=pos.dtype, device=pos.device)
        count.index_add_(0, cols, torch.ones_like(vals))
        pos = pos + shift / count.clamp(min=1.0).unsqueeze(0).unsqueeze(-1)
    return pos

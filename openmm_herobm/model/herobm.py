"""HEroBM = equivariant network + hierarchical reconstruction, as one scriptable module.

The slot tables of the mapping set (which atom each vector places, from which anchor,
at which level) are buffers of the module, so a deployed TorchScript file needs only
bead positions, bead types and the per-system atom index of each slot.
"""

from __future__ import annotations

from typing import Tuple

import torch

from ..reconstruction import place_slots, gather_atoms
from .network import HEroBMNetwork


def radius_edges(pos: torch.Tensor, center_index: torch.Tensor, cutoff: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """All (centre, neighbour) pairs closer than ``cutoff``; centre indexes ``center_index``.

    Brute force in blocks of centres, so memory stays bounded (``block x N``); callers
    chunk big systems spatially (see :func:`openmm_herobm.model.inference.predict_chunked`).
    """
    centers: list[torch.Tensor] = []
    neighbors: list[torch.Tensor] = []
    block = 2048
    for start in range(0, center_index.shape[0], block):
        idx = center_index[start:start + block]
        d = torch.cdist(pos[idx], pos)
        mask = d < cutoff
        mask[torch.arange(idx.shape[0], device=pos.device), idx] = False  # no self edges
        pairs = torch.nonzero(mask)
        centers.append(pairs[:, 0] + start)
        neighbors.append(pairs[:, 1])
    return torch.cat(centers), torch.cat(neighbors)


MAX_SLOT_VECTOR = 4.0  # A; bead -> atom and atom -> atom vectors of real molecules are shorter


class HEroBM(torch.nn.Module):
    """Bead positions (Angstrom) and types -> slot vectors, dihedrals and atom positions."""

    def __init__(self, network: HEroBMNetwork, slot_anchor: torch.Tensor, slot_level: torch.Tensor,
                 slot_weight: torch.Tensor):
        super().__init__()
        self.network = network
        self.cutoff = network.cutoff
        self.max_slot_vector: float = MAX_SLOT_VECTOR
        self.register_buffer("slot_anchor", slot_anchor.long())  # (T, S)
        self.register_buffer("slot_level", slot_level.long())  # (T, S)
        self.register_buffer("slot_weight", slot_weight.to(torch.get_default_dtype()))  # (T, S)

    @torch.jit.export
    def predict(self, pos: torch.Tensor, bead_type: torch.Tensor, center_index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Slot vectors ``(C, S, 3)`` and dihedrals ``(C, 4)`` for the beads ``center_index``."""
        edge_center, edge_neighbor = radius_edges(pos, center_index, self.cutoff)
        return self.network(pos, bead_type, center_index, edge_center, edge_neighbor)

    @torch.jit.export
    def reconstruct(self, pos: torch.Tensor, bead_type: torch.Tensor, vectors: torch.Tensor,
                    slot_atom: torch.Tensor, n_atoms: int) -> torch.Tensor:
        """Atom positions ``(M, 3)`` from bead positions and slot vectors of every bead.

        At inference a slot vector longer than ``MAX_SLOT_VECTOR`` (A) is shortened to it (its
        direction kept, so equivariance holds): no anchor-to-atom vector of a real molecule is
        that long, and one bead pair far outside the training data (e.g. two beads 0.3 A
        apart) must not throw an atom 100 A away.
        """
        if not self.training:
            norm = (vectors * vectors).sum(dim=-1, keepdim=True).sqrt()
            vectors = vectors * torch.clamp(self.max_slot_vector / norm.clamp(min=1e-12), max=1.0)
        anchor = self.slot_anchor[bead_type]
        level = self.slot_level[bead_type]
        weight = self.slot_weight[bead_type]
        slot_pos = place_slots(pos.unsqueeze(0), vectors.unsqueeze(0), anchor, level)
        return gather_atoms(slot_pos, slot_atom, weight, n_atoms)[0]

    def forward(self, pos: torch.Tensor, bead_type: torch.Tensor, slot_atom: torch.Tensor,
                n_atoms: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Atom positions ``(M, 3)`` and per-bead dihedrals ``(N, 4)`` for a whole (small) system."""
        center_index = torch.arange(pos.shape[0], device=pos.device)
        vectors, dihedrals = self.predict(pos, bead_type, center_index)
        return self.reconstruct(pos, bead_type, vectors, slot_atom, n_atoms), dihedrals

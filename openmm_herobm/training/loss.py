"""Training loss (paper eqs. 4-8): position MSE + bond-length and bond-angle terms with tolerances.

The invariant terms only penalise errors beyond a tolerance, so the network is pushed
to build valid geometry (no collapsed forked side chains) without over-fitting the
exact bond lengths of each training structure.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..geometry_torch import angle


@dataclass
class LossWeights:
    position: float = 1.0
    bond: float = 5.0
    angle: float = 5.0
    dihedral: float = 0.5
    bond_tolerance: float = 0.02  # Angstrom
    angle_tolerance: float = 0.05  # radians (about 3 degrees)


def bond_lengths(pos: torch.Tensor, bonds: torch.Tensor) -> torch.Tensor:
    return torch.linalg.norm(pos[bonds[:, 0]] - pos[bonds[:, 1]], dim=-1)


def bond_angles(pos: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Angle i-j-k in radians of each row ``(i, j, k)`` of ``angles``."""
    return angle(pos[angles[:, 0]], pos[angles[:, 1]], pos[angles[:, 2]])


def hinge(error: torch.Tensor, tolerance: float) -> torch.Tensor:
    if error.numel() == 0:
        return error.sum()
    return torch.relu(error.abs() - tolerance).pow(2).mean()


def backmapping_loss(pred: torch.Tensor, true: torch.Tensor, atom_mask: torch.Tensor, bonds: torch.Tensor,
                     angles: torch.Tensor, dihedral_pred: torch.Tensor, dihedral_true: torch.Tensor,
                     dihedral_mask: torch.Tensor, w: LossWeights) -> dict[str, torch.Tensor]:
    """Loss terms for atoms ``pred``/``true`` ``(M, 3)``; ``atom_mask`` selects the atoms that count.

    ``dihedral_*`` are ``(C, 4)`` (sin phi, cos phi, sin psi, cos psi) with ``(C, 2)`` masks.
    """
    sq = (pred - true).pow(2).sum(-1)
    position = sq[atom_mask].mean()
    bond = hinge(bond_lengths(pred, bonds) - bond_lengths(true, bonds), w.bond_tolerance)
    angle = hinge(bond_angles(pred, angles) - bond_angles(true, angles), w.angle_tolerance)
    dmask = dihedral_mask.repeat_interleave(2, dim=1)
    if dmask.any():
        dihedral = (dihedral_pred - dihedral_true).pow(2)[dmask].mean()
    else:
        dihedral = dihedral_pred.sum() * 0.0
    total = w.position * position + w.bond * bond + w.angle * angle + w.dihedral * dihedral
    return {"loss": total, "position": position, "bond": bond, "angle": angle, "dihedral": dihedral}

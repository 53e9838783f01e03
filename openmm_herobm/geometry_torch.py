"""Torch twins of :mod:`openmm_herobm.geometry` (differentiable, any leading shape ``(..., 3)``), for
the fits and the training loss.  Same angles as the numpy functions; the dihedral is written in
its projection form (the formula the protein fit has always used: its output stays bit-identical).
"""

from __future__ import annotations

import torch

from .chemistry import IDEAL_CB


def dihedral(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Dihedral a-b-c-d (radians, IUPAC sign as :func:`openmm_herobm.geometry.dihedral`)."""
    b0, b1, b2 = a - b, c - b, d - c
    b1 = b1 / b1.norm(dim=-1, keepdim=True)
    v = b0 - (b0 * b1).sum(-1, keepdim=True) * b1
    w = b2 - (b2 * b1).sum(-1, keepdim=True) * b1
    return torch.atan2((torch.linalg.cross(b1, v) * w).sum(-1), (v * w).sum(-1))


def angle(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Angle a-b-c (radians) at ``b``, via atan2 (stable near 0 and pi)."""
    u, v = a - b, c - b
    return torch.atan2(torch.linalg.cross(u, v).norm(dim=-1), (u * v).sum(-1))


def signed_volume(centre: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``(a - centre) . ((b - centre) x (c - centre))``, as :func:`openmm_herobm.geometry.signed_volume`."""
    return ((a - centre) * torch.linalg.cross(b - centre, c - centre)).sum(-1)


def ideal_cb(n: torch.Tensor, ca: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """CB of an L amino acid with ideal geometry on N, CA, C (Angstrom), as :func:`openmm_herobm.geometry.ideal_cb`."""
    b, cc = ca - n, c - ca
    return IDEAL_CB[0] * torch.linalg.cross(b, cc) + IDEAL_CB[1] * b + IDEAL_CB[2] * cc + ca

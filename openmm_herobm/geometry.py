"""Geometry of points, one home (numpy): dihedral, angle, signed volume, ideal CB, disulfide pairs.

Points are arrays ``(..., 3)`` that broadcast; results have their leading shape.  The ``*_of``
forms take difference vectors instead of points, for callers that build them themselves (the
minimum-image vectors of a periodic structure).  The torch twins, for fits that need gradients,
are in :mod:`openmm_herobm.geometry_torch`.
"""

from __future__ import annotations

import numpy as np

from .chemistry import DISULFIDE_MAX, IDEAL_CB


def dihedral_of(b1: np.ndarray, b2: np.ndarray, b3: np.ndarray) -> np.ndarray:
    """Dihedral (radians, IUPAC sign as ``mdtraj.compute_dihedrals``) of the bond vectors
    ``b1 = p1 - p0``, ``b2 = p2 - p1``, ``b3 = p3 - p2``."""
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * (b1 * n2).sum(-1)
    return np.arctan2(y, (n1 * n2).sum(-1))


def dihedral(p0: np.ndarray, p1: np.ndarray, p2: np.ndarray, p3: np.ndarray) -> np.ndarray:
    """Dihedral p0-p1-p2-p3 (radians in [-pi, pi], IUPAC sign as ``mdtraj.compute_dihedrals``)."""
    return dihedral_of(p1 - p0, p2 - p1, p3 - p2)


def angle_of(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Angle (radians) between vectors ``u`` and ``v`` (atan2: accurate near 0 and pi too)."""
    return np.arctan2(np.linalg.norm(np.cross(u, v), axis=-1), (u * v).sum(-1))


def angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Angle a-b-c (radians) at ``b``, as ``mdtraj.compute_angles``."""
    return angle_of(a - b, c - b)


def signed_volume_of(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Triple product ``u . (v x w)``."""
    return (u * np.cross(v, w)).sum(-1)


def signed_volume(centre: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``(a - centre) . ((b - centre) x (c - centre))``: the sign gives the handedness of a
    stereocentre (:data:`openmm_herobm.chemistry.CHIRALITY_CHECKS`)."""
    return signed_volume_of(a - centre, b - centre, c - centre)


def ideal_cb(n: np.ndarray, ca: np.ndarray, c: np.ndarray, unit: float = 1.0) -> np.ndarray:
    """CB of an L amino acid with ideal geometry on N, CA, C (:data:`~openmm_herobm.chemistry.IDEAL_CB`).

    ``unit``: Angstrom per unit of the coordinates (10 for nm); the result is in that unit."""
    b, cc = (ca - n) * unit, (c - ca) * unit
    return ca + (IDEAL_CB[0] * np.cross(b, cc) + IDEAL_CB[1] * b + IDEAL_CB[2] * cc) / unit


def disulfide_pairs(sg: np.ndarray, cutoff: float = DISULFIDE_MAX) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``(i, j)``, ``i < j``, of the SG atoms ``sg`` ``(n, 3)`` closer than ``cutoff``
    (the unit of ``sg``; :data:`~openmm_herobm.chemistry.DISULFIDE_MAX` is in Angstrom), ordered by i, then j."""
    d = np.linalg.norm(sg[:, None] - sg[None], axis=-1)
    return np.nonzero(np.triu(d < cutoff, 1))

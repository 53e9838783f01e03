"""Geometry of points, one home (numpy): dihedral, angle, signed volume, ideal CB, disulfide pairs.

Points are arrays ``(..., 3)`` that broadcast; results have their leading shape.  The ``*_of``
forms take difference vectors instead of points, for callers that build them themselves (the
minimum-image vectors of a periodic structure).  The torch twins, for fits that need gradients,
are in :mod:`openmm_herobm.geometry_torch`.
"""

from __future__ import annotations

import numpy as np

from .chemistry import DISULFIDE_MAX, DOUBLE_BOND_CHECKS, FLAT_CENTRE_NM3, IDEAL_CB, MOLECULE_CENTRES


def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``np.cross`` of ``(..., 3)`` arrays, the same numbers ~3x faster (np.cross's axis handling
    costs more than the arithmetic for the few-atom arrays the fits build)."""
    a, b = np.asarray(a), np.asarray(b)
    out = np.empty(np.broadcast_shapes(a.shape, b.shape), np.result_type(a, b))
    out[..., 0] = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
    out[..., 1] = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
    out[..., 2] = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    return out


def dihedral_of(b1: np.ndarray, b2: np.ndarray, b3: np.ndarray) -> np.ndarray:
    """Dihedral (radians, IUPAC sign as ``mdtraj.compute_dihedrals``) of the bond vectors
    ``b1 = p1 - p0``, ``b2 = p2 - p1``, ``b3 = p3 - p2``."""
    n1, n2 = cross(b1, b2), cross(b2, b3)
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


# ------------------------------------------------------------------ lipid stereo repair

_CIS_BOND = (0.150, 0.134)  # nm: C-C single and C=C double bond of a cis alkene (angles ~125 deg)


def repair_stereo(residues, positions_nm: np.ndarray) -> tuple[np.ndarray, dict]:
    """Fix inverted lipid stereocentres and wrong cis/trans double bonds; positions (nm) and counts.

    ``residues``: (residue name, {atom name: row of ``positions_nm``}) per residue; ``positions_nm``
    (atoms, 3).  Checks: the non-protein ones of :data:`~openmm_herobm.chemistry.CHIRALITY_CHECKS`
    and :data:`~openmm_herobm.chemistry.DOUBLE_BOND_CHECKS`.  Used on the model's output
    (``backmap``) and again before the force field (``pipeline``).

    * A centre with the wrong sign is reflected through the plane of its three listed
      neighbours: its bonds to them keep their lengths and the configuration flips.
    * A cis double bond A-B=C-D built trans gets B and C rebuilt in the plane of A, D and
      their old midpoint, on the same side (cis), with B-C 1.34 A and A-B = C-D 1.50 A
      where the A-D distance allows it.  A and D (and the rest of the chain) stay.  A trans
      bond (SSM's sphingosine C4=C5, its amide) built cis gets B and C on opposite sides.
    """
    pos = np.array(positions_nm, dtype=np.float64, copy=True)
    fixed: dict = {}
    for name, atoms in residues:
        for key, (resnames, centre, a, b, c, sign) in MOLECULE_CENTRES.items():
            if name not in resnames or not all(n in atoms for n in (centre, a, b, c)):
                continue
            x0, xa, xb, xc = (pos[atoms[n]] for n in (centre, a, b, c))
            if sign * signed_volume(x0, xa, xb, xc) > 0:
                continue
            normal = np.cross(xb - xa, xc - xa)
            normal /= np.linalg.norm(normal)
            new = x0 - 2 * np.dot(x0 - xa, normal) * normal
            if sign * signed_volume(new, xa, xb, xc) < FLAT_CENTRE_NM3:  # (nearly) flat: out of the plane on the right side
                base = (xa + xb + xc) / 3
                new = max((base + 0.05 * normal, base - 0.05 * normal),
                          key=lambda x: sign * signed_volume(x, xa, xb, xc))
            pos[atoms[centre]] = new
            fixed[key] = fixed.get(key, 0) + 1
        for key, (resnames, quad, kind) in DOUBLE_BOND_CHECKS.items():
            if name not in resnames or not all(n in atoms for n in quad):
                continue
            ia, ib, ic, id_ = (atoms[n] for n in quad)
            if (abs(dihedral(pos[ia], pos[ib], pos[ic], pos[id_])) < np.pi / 2) == (kind == "cis"):  # already right
                continue
            build = _cis_pair if kind == "cis" else _trans_pair
            pos[ib], pos[ic] = build(pos[ia], pos[id_], 0.5 * (pos[ib] + pos[ic]))
            fixed[key] = fixed.get(key, 0) + 1
    return pos, fixed


def _double_bond_frame(a: np.ndarray, d: np.ndarray, hint: np.ndarray):
    """|A-D|, the unit vector u from A to D, and the unit vector w across it towards ``hint``
    (any perpendicular if the hint is on the A-D line): the plane B and C are built in."""
    ad = d - a
    length = np.linalg.norm(ad)
    u = ad / length
    w = (hint - a) - np.dot(hint - a, u) * u
    if np.linalg.norm(w) < 1e-6:
        w = np.cross(u, [1.0, 0.0, 0.0] if abs(u[0]) < 0.9 else [0.0, 1.0, 0.0])
    return length, u, w / np.linalg.norm(w)


def _cis_pair(a: np.ndarray, d: np.ndarray, hint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    single, double = _CIS_BOND
    length, u, w = _double_bond_frame(a, d, hint)
    half = 0.5 * min(double, length)
    offset = max(0.5 * (length - double), 0.0)
    h = max(np.sqrt(max(single ** 2 - offset ** 2, 0.0)), 0.04)  # too far apart for cis: bent, minimisation relaxes
    mid = 0.5 * (a + d)
    return mid - half * u + h * w, mid + half * u + h * w


def _trans_pair(a: np.ndarray, d: np.ndarray, hint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """B and C of a trans A-B=C-D between fixed A and D (nm): point-symmetric about the A-D
    midpoint, B-C 0.134 nm and A-B = C-D 0.150 nm where the A-D distance allows it."""
    single, double = _CIS_BOND
    length, u, w = _double_bond_frame(a, d, hint)
    # along u: s from the midpoint; across: h (B at +h, C at -h): |BC| = double, |AB| = single
    s = min(max((length ** 2 / 4 + double ** 2 / 4 - single ** 2) / length, 0.0), 0.5 * double)
    h = max(np.sqrt(max(double ** 2 / 4 - s ** 2, 0.0)), 0.02)
    mid = 0.5 * (a + d)
    return mid - s * u + h * w, mid + s * u - h * w

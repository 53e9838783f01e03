"""Lipids (and any molecule with a geometry table) made chemically sound before any output.

The network places each atom from its beads; nothing in it knows that a C-C bond is 1.53 A, so
raw lipids come out with bonds off by up to ~1 A.  Here the heavy atoms move as little as
possible (a soft pull to where the network put them) while every bond and angle goes to its
CHARMM36 equilibrium value (``lipid_geometry.json``, written by
``scripts/build_lipid_geometry.py`` from the force field itself).  Sparse Levenberg-Marquardt
(:mod:`~openmm_herobm.reconstruction.least_squares`): one call for the frame, in which every
molecule is its own problem (own damping and stopping rule).

Double bonds are held planar at their cis/trans value (``chemistry.DOUBLE_BOND_CHECKS``: the
caller's stereo repair has put them right before), CHARMM36's impropers at theirs, and every
stereocentre of ``chemistry.CHIRALITY_CHECKS`` on its side (a soft improper at the ideal
tetrahedral value): the regression's nearly flat centres were otherwise pushed through by the
angle terms, 9 of 139 glycerols of the real 8-lipid frame (the caller still checks after).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import scipy.sparse

from ..chemistry import DOUBLE_BOND_CHECKS, MOLECULE_CENTRES, forcefield_residue
from . import least_squares as ls

TABLE = Path(__file__).resolve().parent / "lipid_geometry.json"
# bonds (nearly) hard; angles about as spread as in CHARMM36 MD: with 6 degrees the output's angles
# are 3.1 degrees RMS from equilibrium (a CHARMM36 bilayer's own: 4.2); 2 degrees forced the fused
# cholesterol rings off the network's near-exact placement (BENCHMARKS.md)
SIGMA_BOND, SIGMA_ANGLE = 0.01, math.radians(6.0)  # A, rad
SIGMA_PLANAR = math.radians(3.0)  # impropers and double bonds (cis 0, trans 180 degrees)
# stereocentres: dihedral (centre, a, b, c) of CHIRALITY_CHECKS at sign x 35.26 degrees, the ideal
# tetrahedron's; soft, as real centres spread about it
SIGMA_CHIRAL, CHIRAL_IMPROPER = math.radians(10.0), math.radians(35.26)
# A: how far an atom may leave its predicted place, softly.  With the frame regression's placements
# (session 15; validation bilayer POPCpure_chol0_mix, raw RMSD POPC / CHL): 0.3 A 0.888 / 0.341,
# 0.2 A 0.884 / 0.332, 0.1 A 0.864 / 0.321, 0.05 A 0.838 / 0.318 but then bonds of the real
# 8-lipid frame up to 0.115 A off CHARMM36 (0.1 A: 0.033, 0.3 A: 0.007)
SIGMA_PRIOR = 0.1
ITERATIONS, TOLERANCE = 60, 1e-6  # at most; a molecule stops when a step gains less than TOLERANCE

_table: dict | None = None


def geometry_table() -> dict:
    """``{force-field residue name: {"bonds": [[a, b, length A]], "angles": [[a, b, c, degrees]]}}``."""
    global _table
    if _table is None:
        _table = json.loads(TABLE.read_text())["residues"]
    return _table


class LipidFit:
    """The fit for the residues of one system; call it per frame.

    ``residues``: ``[(name, {atom name: atom index})]``; residues without a table entry (and
    atoms a residue lacks) are left alone."""

    def __init__(self, residues: list, n_atoms: int):
        table = geometry_table()
        bonds, angles, planar, moving = [], [], [], []
        for name, index in residues:
            entry = table.get(forcefield_residue(name))  # CHL, CHOL -> CHL1
            if entry is None:
                continue
            bonds += [(index[a], index[b], d) for a, b, d in entry["bonds"] if a in index and b in index]
            angles += [(index[a], index[b], index[c], math.radians(t)) for a, b, c, t in entry["angles"]
                       if a in index and b in index and c in index]
            planar += [(index[a], index[b], index[c], index[d], math.radians(t), SIGMA_PLANAR)
                       for a, b, c, d, t in entry.get("impropers", []) if all(n in index for n in (a, b, c, d))]
            for resnames, quad, kind in DOUBLE_BOND_CHECKS.values():
                if name in resnames and all(n in index for n in quad):
                    planar.append((*(index[n] for n in quad), 0.0 if kind == "cis" else math.pi, SIGMA_PLANAR))
            for resnames, *quad, sign in MOLECULE_CENTRES.values():
                if name in resnames and all(n in index for n in quad):
                    planar.append((*(index[n] for n in quad), sign * CHIRAL_IMPROPER, SIGMA_CHIRAL))
            moving += list(index.values())
        self.n_atoms = n_atoms
        self.moving = np.unique(np.asarray(moving, np.int64))
        self.empty = len(bonds) == 0
        if self.empty:
            return
        b = np.asarray(bonds)
        a = np.asarray(angles)
        self._bonds = ls.Bonds(b[:, 0].astype(np.int64), b[:, 1].astype(np.int64), b[:, 2], SIGMA_BOND)
        self._angles = ls.Angles(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2].astype(np.int64),
                                 a[:, 3], SIGMA_ANGLE)
        self._terms = [self._bonds, self._angles]
        if planar:
            p = np.asarray(planar)
            q = p[:, :4].astype(np.int64)
            self._terms.append(ls.Dihedrals(q[:, 0], q[:, 1], q[:, 2], q[:, 3], p[:, 4], p[:, 5]))
        self._select = scipy.sparse.identity(n_atoms, format="csr")[self.moving]

    def __call__(self, xyz: np.ndarray, anchor: np.ndarray | None = None) -> np.ndarray:
        """Fitted copy of ``xyz`` ``(n_atoms, 3)`` (Angstrom), each atom pulled softly to ``anchor``
        (the network's placement; default ``xyz``).  A second round started from a fitted frame
        keeps the first round's anchor: the molecules already sound stay where they are."""
        if self.empty:
            return xyz
        x = np.array(xyz, np.float64)
        target = x if anchor is None else np.asarray(anchor, np.float64)
        prior = ls.Linear(self._select, target[self.moving], np.full(len(self.moving), SIGMA_PRIOR))
        x = ls.solve(self._terms + [prior], x, self.moving, ITERATIONS, tolerance=TOLERANCE).x
        if not np.isfinite(x).all():
            return np.asarray(xyz)
        return x.astype(np.asarray(xyz).dtype)

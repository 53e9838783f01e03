"""Repair wrong stereocentres before the force field sees them (minimisation cannot invert one).

* CA (L-amino acids): if N, C, CB around CA have the D sign, CB and the rest of the side
  chain are mirrored through the N-CA-C plane (the side chain keeps its shape, CB lands on
  the L side).
* ILE CB and THR CB: swapping the positions of the two branches (CG1/CG2, OG1/CG2)
  inverts the centre exactly; ILE's CD1 follows CG1.

Signs are those of :mod:`openmm_herobm.evaluation.metrics` (signed volume
``(a - c) . ((b - c) x (d - c))`` positive for the natural configuration).
"""

from __future__ import annotations

import numpy as np
import openmm.app as app

_BACKBONE = {"N", "CA", "C", "O", "OXT"}


def _volume(c, a, b, d) -> float:
    return float(np.dot(a - c, np.cross(b - c, d - c)))


def repair_chirality(topology: app.Topology, positions_nm: np.ndarray) -> tuple[np.ndarray, dict]:
    """Corrected positions and counts of repaired centres ``{'ca': n, 'ile_cb': n, 'thr_cb': n}``."""
    pos = np.array(positions_nm, dtype=np.float64, copy=True)
    fixed = {"ca": 0, "ile_cb": 0, "thr_cb": 0}
    for residue in topology.residues():
        atoms = {a.name: a.index for a in residue.atoms()}
        if residue.name == "GLY" or not all(k in atoms for k in ("N", "CA", "C", "CB")):
            continue
        n, ca, c, cb = (pos[atoms[k]] for k in ("N", "CA", "C", "CB"))
        if _volume(ca, n, c, cb) < 0:
            normal = np.cross(n - ca, c - ca)
            normal /= np.linalg.norm(normal)
            side = [i for name, i in atoms.items() if name not in _BACKBONE]
            d = (pos[side] - ca) @ normal
            pos[side] -= 2 * d[:, None] * normal  # mirror through the N-CA-C plane
            fixed["ca"] += 1
        branches = {"ILE": ("CG1", "CG2", "ile_cb"), "THR": ("OG1", "CG2", "thr_cb")}.get(residue.name)
        if branches and all(k in atoms for k in ("CA", "CB") + branches[:2]):
            a, b, key = branches
            if _volume(pos[atoms["CB"]], pos[atoms["CA"]], pos[atoms[a]], pos[atoms[b]]) < 0:
                shift = pos[atoms[b]] - pos[atoms[a]]
                pos[[atoms[a], atoms[b]]] = pos[[atoms[b], atoms[a]]]
                if residue.name == "ILE" and "CD1" in atoms:
                    pos[atoms["CD1"]] += shift  # CD1 stays bonded to CG1
                fixed[key] += 1
    return pos, fixed

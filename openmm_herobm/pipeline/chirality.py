"""Repair wrong stereocentres before the force field sees them (minimisation cannot invert one).

* CA (L-amino acids): if N, C, CB around CA have the D sign, CB and the rest of the side
  chain are mirrored through the N-CA-C plane (the side chain keeps its shape, CB lands on
  the L side).  A centre that is nearly flat (signed volume below 0.8 A^3; ideal ~2.5) would
  be inverted by the force field, so its side chain is moved to put CB on the ideal
  tetrahedral position.
* ILE CB and THR CB: swapping the positions of the two branches (CG1/CG2, OG1/CG2)
  inverts the centre exactly; ILE's CD1 follows CG1.

Signs are those of :mod:`openmm_herobm.evaluation.metrics` (signed volume
``(a - c) . ((b - c) x (d - c))`` positive for the natural configuration).
"""

from __future__ import annotations

import numpy as np
import openmm.app as app

_BACKBONE = {"N", "CA", "C", "O", "OXT"}
_FLAT = 0.8e-3  # nm^3 (0.8 A^3)


def ideal_cb(n: np.ndarray, ca: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Ideal L-CB position (nm) from N, CA, C (the usual tetrahedral construction, in A)."""
    b, cc = (ca - n) * 10, (c - ca) * 10
    a = np.cross(b, cc)
    return ca + (-0.58273431 * a + 0.56802827 * b - 0.54067466 * cc) / 10


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
        cb = pos[atoms["CB"]]
        if _volume(ca, n, c, cb) < _FLAT:
            side = [i for name, i in atoms.items() if name not in _BACKBONE]
            pos[side] += ideal_cb(n, ca, c) - cb
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
            if _volume(pos[atoms["CB"]], pos[atoms["CA"]], pos[atoms[a]], pos[atoms[b]]) < _FLAT:
                # a flat centre: put CG2 where a tetrahedral centre has it (same construction as CB)
                pos[atoms[b]] = ideal_cb(pos[atoms["CA"]], pos[atoms["CB"]], pos[atoms[a]])
                fixed[key] += 1
    return pos, fixed


CHIRALITY_FORCE = "HEroBM chirality restraint"


def chirality_restraint_force(topology: app.Topology, k: float = 1.0e8, minimum: float = 1.5e-3):
    """Flat-bottom restraint on the signed volume of every CA, ILE-CB and THR-CB centre.

    ``E = k * max(0, v_min - v)^2`` with ``v = (a - c) . ((b - c) x (d - c))`` (nm^3): zero for
    a correct centre (ideal v ~ 2.5e-3 nm^3), so it never biases a good structure, but the
    minimiser cannot push a centre through the plane.
    """
    import openmm as mm

    a = "(x1-x4)"; b = "(x2-x4)"; c = "(x3-x4)"
    ay, by, cy = a.replace("x", "y"), b.replace("x", "y"), c.replace("x", "y")
    az, bz, cz = a.replace("x", "z"), b.replace("x", "z"), c.replace("x", "z")
    volume = (f"{a}*({by}*{cz}-{bz}*{cy}) + {ay}*({bz}*{c}-{b}*{cz}) + {az}*({b}*{cy}-{by}*{c})")
    force = mm.CustomCompoundBondForce(4, f"k_chiral*step(vmin-v)*(vmin-v)^2; v={volume}")
    force.addGlobalParameter("k_chiral", k)
    force.addGlobalParameter("vmin", minimum)
    for residue in topology.residues():
        atoms = {x.name: x.index for x in residue.atoms()}
        checks = [("CA", ("N", "C", "CB"))] if residue.name != "GLY" else []
        if residue.name == "ILE":
            checks.append(("CB", ("CA", "CG1", "CG2")))
        elif residue.name == "THR":
            checks.append(("CB", ("CA", "OG1", "CG2")))
        for centre, ligands in checks:
            if centre in atoms and all(x in atoms for x in ligands):
                force.addBond([atoms[ligands[0]], atoms[ligands[1]], atoms[ligands[2]], atoms[centre]], [])
    force.setName(CHIRALITY_FORCE)
    return force


PEPTIDE_FORCE = "HEroBM peptide-plane restraint"


def peptide_restraint_force(topology: app.Topology, positions_nm: np.ndarray, k: float = 1000.0,
                            tolerance_deg: float = 30.0):
    """Flat-bottom restraint that keeps every peptide bond on its side: trans, or cis for a cis proline.

    ``E = k * max(0, |omega - omega0| - tol)^2`` (kJ/mol, radians) on CA-C-N-CA across each
    peptide bond: zero within ``tolerance_deg`` of planar, so it does not bias a sane
    structure, but a strained backbone cannot flip a trans peptide to cis during
    minimisation.  ``omega0`` is 0 only for an X-Pro bond that is already cis in
    ``positions_nm``; every other peptide is held trans.
    """
    import openmm as mm

    force = mm.CustomTorsionForce("k_omega*step(d-tol_omega)*(d-tol_omega)^2; "
                                  "d=abs(atan2(sin(theta-theta0), cos(theta-theta0)))")
    force.addGlobalParameter("k_omega", k)
    force.addGlobalParameter("tol_omega", np.radians(tolerance_deg))
    force.addPerTorsionParameter("theta0")
    names = [{a.name: a.index for a in r.atoms()} for r in topology.residues()]
    for a, b in topology.bonds():
        if {a.name, b.name} != {"C", "N"} or a.residue.index == b.residue.index:
            continue
        c_atom, n_atom = (a, b) if a.name == "C" else (b, a)
        before, after = names[c_atom.residue.index], names[n_atom.residue.index]
        if "CA" not in before or "CA" not in after:
            continue
        quad = [before["CA"], c_atom.index, n_atom.index, after["CA"]]
        cis_pro = n_atom.residue.name == "PRO" and abs(_dihedral(positions_nm[quad])) < np.pi / 2
        force.addTorsion(*quad, [0.0 if cis_pro else np.pi])
    force.setName(PEPTIDE_FORCE)
    return force


def _dihedral(p: np.ndarray) -> float:
    b0, b1, b2 = p[0] - p[1], p[2] - p[1], p[3] - p[2]
    b1 = b1 / np.linalg.norm(b1)
    v = b0 - np.dot(b0, b1) * b1
    w = b2 - np.dot(b2, b1) * b1
    return float(np.arctan2(np.dot(np.cross(b1, v), w), np.dot(v, w)))

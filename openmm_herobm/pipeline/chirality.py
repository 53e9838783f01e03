"""Repair wrong stereocentres before the force field sees them (minimisation cannot invert one).

* CA (L-amino acids): if N, C, CB around CA have the D sign, CB and the rest of the side
  chain are mirrored through the N-CA-C plane (the side chain keeps its shape, CB lands on
  the L side).  A centre that is nearly flat (signed volume below 0.8 A^3; ideal ~2.5) would
  be inverted by the force field, so its side chain is moved to put CB on the ideal
  tetrahedral position.
* ILE CB and THR CB: swapping the positions of the two branches (CG1/CG2, OG1/CG2)
  inverts the centre exactly; ILE's CD1 follows CG1.

Centres and signs are those of :data:`openmm_herobm.chemistry.CHIRALITY_CHECKS`
(:func:`openmm_herobm.geometry.signed_volume` positive or negative for the natural configuration).
"""

from __future__ import annotations

import numpy as np
import openmm.app as app

from ..chemistry import (CHIRALITY_CHECKS, DOUBLE_BOND_CHECKS, FLAT_CENTRE_NM3, MOLECULE_CENTRES, NOT_SIDE_CHAIN,
                         PROTEIN_CENTRES)
from ..geometry import dihedral, ideal_cb, repair_stereo, signed_volume

_NM = 10.0  # Angstrom per nm (geometry.ideal_cb's unit)
#: the three neighbours of CA; per residue name, the two branches (after CA) of its CB centre and the centre's key
_CA_LIGANDS = CHIRALITY_CHECKS["ca"][2:5]
_BRANCHES = {resnames[0]: (a, b, key) for key, (resnames, _, _, a, b, _) in CHIRALITY_CHECKS.items()
             if key in ("ile_cb", "thr_cb")}


def _volume_expression() -> str:
    """geometry.signed_volume as an OpenMM expression: centre particle 4, neighbours 1, 2, 3 (nm^3)."""
    a = "(x1-x4)"; b = "(x2-x4)"; c = "(x3-x4)"
    ay, by, cy = a.replace("x", "y"), b.replace("x", "y"), c.replace("x", "y")
    az, bz, cz = a.replace("x", "z"), b.replace("x", "z"), c.replace("x", "z")
    return f"{a}*({by}*{cz}-{bz}*{cy}) + {ay}*({bz}*{c}-{b}*{cz}) + {az}*({b}*{cy}-{by}*{c})"


def repair_chirality(topology: app.Topology, positions_nm: np.ndarray) -> tuple[np.ndarray, dict]:
    """Corrected positions and counts of repaired centres ``{'ca': n, 'ile_cb': n, 'thr_cb': n}``."""
    pos = np.array(positions_nm, dtype=np.float64, copy=True)
    fixed = dict.fromkeys(PROTEIN_CENTRES, 0)
    for residue in topology.residues():
        atoms = {a.name: a.index for a in residue.atoms()}
        if residue.name == "GLY" or not all(k in atoms for k in ("N", "CA", "C", "CB")):
            continue
        n, ca, c, cb = (pos[atoms[k]] for k in ("N", "CA", "C", "CB"))
        if signed_volume(ca, n, c, cb) < 0:
            normal = np.cross(n - ca, c - ca)
            normal /= np.linalg.norm(normal)
            side = [i for name, i in atoms.items() if name not in NOT_SIDE_CHAIN]
            d = (pos[side] - ca) @ normal
            pos[side] -= 2 * d[:, None] * normal  # mirror through the N-CA-C plane
            fixed["ca"] += 1
        cb = pos[atoms["CB"]]
        if signed_volume(ca, n, c, cb) < FLAT_CENTRE_NM3:
            side = [i for name, i in atoms.items() if name not in NOT_SIDE_CHAIN]
            pos[side] += ideal_cb(n, ca, c, _NM) - cb
            fixed["ca"] += 1
        branches = _BRANCHES.get(residue.name)
        if branches and all(k in atoms for k in ("CA", "CB") + branches[:2]):
            a, b, key = branches
            if signed_volume(pos[atoms["CB"]], pos[atoms["CA"]], pos[atoms[a]], pos[atoms[b]]) < 0:
                shift = pos[atoms[b]] - pos[atoms[a]]
                pos[[atoms[a], atoms[b]]] = pos[[atoms[b], atoms[a]]]
                if residue.name == "ILE" and "CD1" in atoms:
                    pos[atoms["CD1"]] += shift  # CD1 stays bonded to CG1
                fixed[key] += 1
            if signed_volume(pos[atoms["CB"]], pos[atoms["CA"]], pos[atoms[a]], pos[atoms[b]]) < FLAT_CENTRE_NM3:
                # a flat centre: put CG2 where a tetrahedral centre has it (same construction as CB)
                pos[atoms[b]] = ideal_cb(pos[atoms["CA"]], pos[atoms["CB"]], pos[atoms[a]], _NM)
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

    volume = _volume_expression()
    force = mm.CustomCompoundBondForce(4, f"k_chiral*step(vmin-v)*(vmin-v)^2; v={volume}")
    force.addGlobalParameter("k_chiral", k)
    force.addGlobalParameter("vmin", minimum)
    for residue in topology.residues():
        atoms = {x.name: x.index for x in residue.atoms()}
        checks = [("CA", _CA_LIGANDS)] if residue.name != "GLY" else []
        if residue.name in _BRANCHES:
            checks.append(("CB", ("CA",) + _BRANCHES[residue.name][:2]))
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
        cis_pro = n_atom.residue.name == "PRO" and abs(dihedral(*positions_nm[quad])) < np.pi / 2
        force.addTorsion(*quad, [0.0 if cis_pro else np.pi])
    force.setName(PEPTIDE_FORCE)
    return force


BACKBONE_FORCE = "HEroBM Ramachandran restraint"
RAMA_KJ_MOL = 50.0  # kJ/mol per kT of the statistical potential (as strong as the fit's RAMA_WEIGHT x kT)


def ramachandran_force(topology: app.Topology, kj_per_kt: float = RAMA_KJ_MOL):
    """The fit's Ramachandran statistical potential as a ``CMAPTorsionForce`` on every residue with
    both phi and psi: zero inside the region that holds 98% of the training residues of its class,
    rising outside it.  The fitted start is Ramachandran-sound; without this, a minimiser pushed by
    strain elsewhere (a ring, a disulfide, the bead restraint) carries residues out of their
    region (seen: prolines taken from phi -35 to +6, which no proline ring allows)."""
    import openmm as mm

    from ..reconstruction import RAMA_ALLOWED, RAMA_CLASSES, RamachandranPotential, rama_class

    potential = RamachandranPotential(allowed=RAMA_ALLOWED)
    size = 72
    angles = np.arange(size) * 2 * np.pi / size  # OpenMM's grid: 0 ... 2 pi
    phi, psi = np.meshgrid(angles, angles, indexing="ij")  # energy[i + size * j]: phi_i, psi_j
    force = mm.CMAPTorsionForce()
    for c in range(len(RAMA_CLASSES)):
        e = potential(np.full(phi.size, c), (phi.ravel() + np.pi) % (2 * np.pi) - np.pi,
                      (psi.ravel() + np.pi) % (2 * np.pi) - np.pi)[0].reshape(size, size)
        force.addMap(size, list((kj_per_kt * e).T.ravel()))  # index i + size * j
    residues = list(topology.residues())
    names = [{a.name: a for a in r.atoms()} for r in residues]
    bonded = {(a.residue.index, b.residue.index) for a, b in topology.bonds()
              if {a.name, b.name} == {"C", "N"} and a.residue.index != b.residue.index}
    linked = {min(p) for p in bonded if abs(p[0] - p[1]) == 1}  # residue k bonded to k + 1
    for k in range(1, len(residues) - 1):
        if k - 1 not in linked or k not in linked:
            continue
        prev, here, nxt = names[k - 1], names[k], names[k + 1]
        if "C" not in prev or not {"N", "CA", "C"} <= set(here) or "N" not in nxt:
            continue
        cls = rama_class(residues[k].name, residues[k + 1].name)
        force.addTorsion(cls, prev["C"].index, here["N"].index, here["CA"].index, here["C"].index,
                         here["N"].index, here["CA"].index, here["C"].index, nxt["N"].index)
    force.setName(BACKBONE_FORCE)
    return force


# ------------------------------------------------------------------ lipids and other molecules


def repair_molecule_stereo(topology: app.Topology, positions_nm: np.ndarray) -> tuple[np.ndarray, dict]:
    """Fix inverted lipid stereocentres and wrong cis/trans double bonds; positions (nm) and counts
    (:func:`openmm_herobm.geometry.repair_stereo` on an OpenMM topology's residues)."""
    residues = [(r.name, {a.name: a.index for a in r.atoms()}) for r in topology.residues()]
    return repair_stereo(residues, positions_nm)


def molecule_stereo_force(topology: app.Topology, k: float = 1.0e8, minimum: float = 1.5e-3,
                          k_cis: float = 1000.0, tolerance_deg: float = 30.0) -> list:
    """Flat-bottom guards for lipid centres (signed volume) and cis/trans double bonds (dihedral), for minimisation.

    Zero on a correct structure; they stop the minimiser from inverting a centre or
    turning a cis double bond trans.  Empty list when the topology has none.
    """
    import openmm as mm

    centres, double_bonds = MOLECULE_CENTRES, DOUBLE_BOND_CHECKS
    volume = _volume_expression()
    chiral = mm.CustomCompoundBondForce(4, f"k_mol_chiral*step(vmin_mol-v)*(vmin_mol-v)^2; v=sign_v*({volume})")
    chiral.addGlobalParameter("k_mol_chiral", k)
    chiral.addGlobalParameter("vmin_mol", minimum)
    chiral.addPerBondParameter("sign_v")
    # one force for both kinds: x is how far the dihedral is past the tolerance, from 0 (cis) or pi (trans)
    cis = mm.CustomTorsionForce("k_cis*step(x)*x^2; x=want_cis*(d-tol_cis) + (1-want_cis)*(3.141592653589793-tol_cis-d);"
                                "d=abs(atan2(sin(theta), cos(theta)))")
    cis.addGlobalParameter("k_cis", k_cis)
    cis.addGlobalParameter("tol_cis", np.radians(tolerance_deg))
    cis.addPerTorsionParameter("want_cis")
    for residue in topology.residues():
        atoms = {x.name: x.index for x in residue.atoms()}
        for resnames, centre, na, nb, nc, sign in centres.values():
            if residue.name in resnames and all(n in atoms for n in (centre, na, nb, nc)):
                chiral.addBond([atoms[na], atoms[nb], atoms[nc], atoms[centre]], [float(sign)])
        for resnames, quad, kind in double_bonds.values():
            if residue.name in resnames and all(n in atoms for n in quad):
                cis.addTorsion(*(atoms[n] for n in quad), [1.0 if kind == "cis" else 0.0])
    chiral.setName(MOLECULE_CHIRALITY_FORCE)
    cis.setName(CIS_FORCE)
    return [f for f, n in ((chiral, chiral.getNumBonds()), (cis, cis.getNumTorsions())) if n]


MOLECULE_CHIRALITY_FORCE = "HEroBM lipid stereocentre restraint"
CIS_FORCE = "HEroBM cis double-bond restraint"


SHORT_BOND_NM = 0.10  # no bond between heavy atoms is this short (C#N is 0.116 nm)
REBUILT_BOND_NM = 0.145
SHORT_METHYL_NM = 0.135  # a terminal carbon (methyl) this close to its neighbour is compressed
METHYL_BOND_NM = {"C": 0.152, "N": 0.147, "O": 0.143, "S": 0.181}


def stretch_collapsed_bonds(topology: app.Topology, positions_nm: np.ndarray) -> tuple[np.ndarray, int]:
    """Put back to length bonds that the model collapsed or compressed; positions (nm) and the number moved.

    An averaged prediction for a freely rotating group (cholesterol's isopropyl end, a
    leucine's or valine's methyls) can land two bonded atoms almost on one point, or pull a
    methyl in to 1.3 A; hydrogens built on that leave the group inside-out, a tangle the
    minimiser does not undo and dynamics blows up on.  So, before hydrogens:

    * a bond between heavy atoms < 0.10 nm: the atom with fewer heavy neighbours moves along
      the bond (or away from its residue's centre when the two coincide) to 0.145 nm;
    * a terminal carbon (one heavy neighbour, single bond: a methyl) < 0.135 nm from its
      neighbour moves along the bond to the single-bond length (C-C 0.152 nm, C-N 0.147 ...).
    """
    pos = np.array(positions_nm, dtype=np.float64, copy=True)
    atoms = list(topology.atoms())
    heavy = np.array([a.element is not None and a.element.symbol != "H" for a in atoms])
    bonds = np.array([(a.index, b.index) for a, b in topology.bonds()], np.int64).reshape(-1, 2)
    bonds = bonds[heavy[bonds].all(1)] if len(bonds) else bonds
    if not len(bonds):
        return pos, 0
    degree = np.bincount(bonds.ravel(), minlength=len(pos))
    symbol = np.array([a.element.symbol if a.element is not None else "" for a in atoms])
    # moved atom = the end with fewer heavy neighbours
    swap = degree[bonds[:, 1]] > degree[bonds[:, 0]]
    moved = np.where(swap, bonds[:, 0], bonds[:, 1])
    fixed = np.where(swap, bonds[:, 1], bonds[:, 0])
    length = np.linalg.norm(pos[moved] - pos[fixed], axis=1)
    target = np.full(len(bonds), np.nan)
    methyl = (symbol[moved] == "C") & (degree[moved] == 1) & np.isin(symbol[fixed], list(METHYL_BOND_NM))
    compressed = methyl & (length < SHORT_METHYL_NM)
    target[compressed] = [METHYL_BOND_NM[e] for e in symbol[fixed[compressed]]]
    collapsed = length < SHORT_BOND_NM
    target[collapsed & ~compressed] = REBUILT_BOND_NM
    residue_of = np.array([a.residue.index for a in atoms])
    todo = np.nonzero(np.isfinite(target))[0]
    for k in todo:  # a handful per structure: the loop is over broken bonds, not atoms
        direction = pos[moved[k]] - pos[fixed[k]]
        if np.linalg.norm(direction) < 1e-3:
            direction = pos[moved[k]] - pos[residue_of == residue_of[moved[k]]].mean(0)
        if np.linalg.norm(direction) < 1e-3:
            direction = np.array([1.0, 0.0, 0.0])
        pos[moved[k]] = pos[fixed[k]] + target[k] * direction / np.linalg.norm(direction)
    return pos, len(todo)

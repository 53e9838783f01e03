"""From backmapped heavy atoms to an OpenMM ``Topology`` that force-field templates accept.

* Chains are split at chain breaks (CA(i)-CA(i+1) > 4.3 A; a trans peptide spans 3.8 A and
  CA positions are what the CG beads pin down best), so each piece gets real termini
  instead of a stretched peptide bond.
* Disulfides are detected from geometry (SG-SG < 2.5 A) and bonded; their cysteines
  are named CYS, and the bond keeps the hydrogen off SG.
* Protonation variants named in the input (HID/HIE/HIP, HSD/HSE/HSP, ASH, GLH, LYN, CYM)
  are kept as OpenMM ``Modeller`` variants; plain names get their state from the pH.
"""

from __future__ import annotations

from dataclasses import dataclass

import mdtraj
import numpy as np
import openmm.app as app
import openmm.unit as unit

# input residue name -> (standard name, Modeller.addHydrogens variant or None = from the pH)
_VARIANTS = {
    "HID": ("HIS", "HID"), "HIE": ("HIS", "HIE"), "HIP": ("HIS", "HIP"),
    "HSD": ("HIS", "HID"), "HSE": ("HIS", "HIE"), "HSP": ("HIS", "HIP"),
    "ASH": ("ASP", "ASH"), "GLH": ("GLU", "GLH"), "LYN": ("LYS", "LYN"),
    "CYM": ("CYS", "CYX"), "CYX": ("CYS", None),
}
_PROTEIN = {"ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU", "LYS", "MET", "PHE",
            "PRO", "SER", "THR", "TRP", "TYR", "VAL", "ACE", "NME"}


@dataclass
class PreparedTopology:
    topology: app.Topology
    positions: unit.Quantity  # nm
    variants: list  # per residue, for Modeller.addHydrogens
    source_atom: np.ndarray  # (n_atoms,) index of each atom in the input heavy-atom trajectory
    n_breaks: int
    n_disulfides: int


def prepare_topology(traj: mdtraj.Trajectory, frame: int = 0) -> PreparedTopology:
    """OpenMM topology of the heavy atoms of ``traj`` (mdtraj, nm), ready for ``Modeller``."""
    xyz = traj.xyz[frame].astype(np.float64)
    top = app.Topology()
    positions, variants, source = [], [], []
    n_breaks = 0
    by_residue: list[dict] = []
    for chain in traj.topology.chains:
        chain_id = getattr(chain, "chain_id", None) or chr(ord("A") + chain.index % 26)
        new_chain = top.addChain(chain_id)
        residues = list(chain.residues)
        ca = [next((a.index for a in r.atoms if a.name == "CA"), None) if r.name in _PROTEIN else None
              for r in residues]
        gap = [k > 0 and ca[k] is not None and ca[k - 1] is not None
               and np.linalg.norm(xyz[ca[k]] - xyz[ca[k - 1]]) > 0.43 for k in range(len(residues))]
        # a lone residue between two gaps would be a free amino acid (no force-field template):
        # keep it bonded to its left neighbour instead (minimisation closes the stretched bond)
        n_res = len(residues)
        for k in range(n_res):
            starts_alone = (k == 0 or gap[k]) and (k == n_res - 1 or gap[k + 1])
            if starts_alone and n_res > 1:
                if k > 0:
                    gap[k] = False  # join the left neighbour
                else:
                    gap[1] = False  # the first residue joins its right neighbour
        for k, residue in enumerate(residues):
            if gap[k]:
                new_chain = top.addChain(chain_id)  # a break: start a new chain (new termini)
                n_breaks += 1
            standard, variant = _VARIANTS.get(residue.name, (residue.name, None))
            new_res = top.addResidue(standard, new_chain, str(residue.resSeq),
                                     getattr(residue, "insertion_code", "") or "")
            atoms = {}
            for atom in residue.atoms:
                if atom.element is None or atom.element.symbol in ("H", "VS"):
                    continue
                atoms[atom.name] = top.addAtom(atom.name, app.Element.getBySymbol(atom.element.symbol), new_res)
                positions.append(xyz[atom.index])
                source.append(atom.index)
            variants.append(variant)
            by_residue.append(atoms)
    # bonds inside residues and peptide bonds come from OpenMM's templates
    top.createStandardBonds()
    pos = np.array(positions)
    # disulfides on the stereo-repaired geometry: a mirrored D-cysteine moves its SG
    from .chirality import repair_chirality

    n_ss = _bond_disulfides(top, repair_chirality(top, pos)[0], variants)
    return PreparedTopology(top, unit.Quantity(pos, unit.nanometer), variants, np.array(source), n_breaks, n_ss)


def _bond_disulfides(top: app.Topology, pos: np.ndarray, variants: list) -> int:
    sg = [a for a in top.atoms() if a.name == "SG" and a.residue.name == "CYS"]
    if len(sg) < 2:
        return 0
    xyz = pos[[a.index for a in sg]]
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    n = 0
    used: set[int] = set()
    for i, j in zip(*np.nonzero(np.triu(d < 0.25, k=1))):
        if i in used or j in used:
            continue
        top.addBond(sg[i], sg[j])
        used.update((i, j))
        for a in (sg[i], sg[j]):
            variants[a.residue.index] = "CYX"
        n += 1
    return n

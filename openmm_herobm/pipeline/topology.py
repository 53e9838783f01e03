"""From backmapped heavy atoms to an OpenMM ``Topology`` that force-field templates accept.

* Chains are split at chain breaks, so each piece gets real termini instead of a stretched
  peptide bond.  The breaks come from the CG input when it is known (``linked``: BB beads
  closer than 4.6 A, :meth:`~openmm_herobm.backmapping.BackmapResult.links`), never from a
  stretched output backbone; otherwise from CA(i)-CA(i+1) > 4.3 A.
* A residue alone between two breaks, or alone in its chain, is a free amino acid: it stays
  bonded to a neighbour whose CA is within 6.5 A (a stretched bond that minimisation
  closes), else it is kept as a chain of its own (``free=True``: both termini on one
  residue, which CHARMM36 patches but amber14 has no template for) or left out of the
  refined structure and reported (crystal structures with unresolved loops).
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

from ..chemistry import DISULFIDE_MAX, MODELLER_VARIANT, PROTEIN_RESIDUES, forcefield_residue, standard_residue
from ..geometry import disulfide_pairs

LONE_JOIN_MAX = 0.65  # nm: a lone residue is bonded to a neighbour whose CA is at most this far


@dataclass
class PreparedTopology:
    topology: app.Topology
    positions: unit.Quantity  # nm
    variants: list  # per residue, for Modeller.addHydrogens
    source_atom: np.ndarray  # (n_atoms,) index of each atom in the input heavy-atom trajectory
    n_breaks: int
    n_disulfides: int
    source_residue: np.ndarray  # (n_residues,) index of each residue in the input trajectory
    dropped: list  # labels of input residues left out (free amino acids, with free=False)
    free: list  # index (in ``topology``) of every residue kept as a free amino acid (free=True)


def prepare_topology(traj: mdtraj.Trajectory, frame: int = 0, linked: np.ndarray | None = None,
                     free: bool = False) -> PreparedTopology:
    """OpenMM topology of the heavy atoms of ``traj`` (mdtraj, nm), ready for ``Modeller``.

    ``linked`` ``(n_residues,)`` bool: residue k is bonded to residue k-1 (from the CG input);
    None: judged from the CA-CA distance.  ``free``: keep free amino acids (no peptide bond to
    either neighbour) as chains of their own, for a force field that has templates for them;
    False leaves them out (listed in ``dropped``)."""
    xyz = traj.xyz[frame].astype(np.float64)
    top = app.Topology()
    positions, variants, source = [], [], []
    n_breaks = 0
    by_residue: list[dict] = []
    source_residue: list[int] = []
    dropped: list[str] = []
    free_residues: list[int] = []
    new_atom: dict = {}
    for chain in traj.topology.chains:
        chain_id = getattr(chain, "chain_id", None) or chr(ord("A") + chain.index % 26)
        new_chain = top.addChain(chain_id)
        residues = list(chain.residues)
        ca = [next((a.index for a in r.atoms if a.name == "CA"), None) if r.name in PROTEIN_RESIDUES else None
              for r in residues]
        ca_dist = [np.linalg.norm(xyz[ca[k]] - xyz[ca[k - 1]]) if k > 0 and ca[k] is not None
                   and ca[k - 1] is not None else np.inf for k in range(len(residues))]
        if linked is None:
            gap = [k > 0 and ca_dist[k] > 0.43 and np.isfinite(ca_dist[k]) for k in range(len(residues))]
        else:
            gap = [k > 0 and ca[k] is not None and ca[k - 1] is not None and not linked[residues[k].index]
                   for k in range(len(residues))]
        n_res = len(residues)
        lone = [False] * n_res
        for k in range(n_res):
            alone = (k == 0 or gap[k]) and (k == n_res - 1 or gap[k + 1]) and residues[k].name in PROTEIN_RESIDUES
            if not alone:
                continue
            left = ca_dist[k] if k > 0 else np.inf
            right = ca_dist[k + 1] if k < n_res - 1 else np.inf
            if min(left, right) <= LONE_JOIN_MAX:
                gap[k if left <= right else k + 1] = False  # join the nearer neighbour
            else:
                lone[k] = True
                if not free:
                    dropped.append(f"{residue_label(residues[k], chain_id)}")
        for k, residue in enumerate(residues):
            if lone[k] and not free:
                if k + 1 < n_res:
                    gap[k + 1] = True  # what follows starts a new chain
                continue
            if gap[k] and next(iter(new_chain.residues()), None) is not None:
                new_chain = top.addChain(chain_id)  # a break: start a new chain (new termini)
                n_breaks += 1
            if lone[k]:
                free_residues.append(len(source_residue))
            source_residue.append(residue.index)
            standard = forcefield_residue(standard_residue(residue.name))
            variant = MODELLER_VARIANT.get(residue.name)  # None: Modeller takes the state from the pH
            new_res = top.addResidue(standard, new_chain, str(residue.resSeq),
                                     getattr(residue, "insertion_code", "") or "")
            atoms = {}
            for atom in residue.atoms:
                if atom.element is None or atom.element.symbol in ("H", "VS"):
                    continue
                atoms[atom.name] = top.addAtom(atom.name, app.Element.getBySymbol(atom.element.symbol), new_res)
                new_atom[atom.index] = atoms[atom.name]
                positions.append(xyz[atom.index])
                source.append(atom.index)
            variants.append(variant)
            by_residue.append(atoms)
    # bonds inside residues and peptide bonds come from OpenMM's templates; other molecules
    # (lipids, ligands) bring theirs from the mapping (the backmapped topology has them)
    top.createStandardBonds()
    for a, b in traj.topology.bonds:
        if a.residue.name not in PROTEIN_RESIDUES and a.index in new_atom and b.index in new_atom:
            top.addBond(new_atom[a.index], new_atom[b.index])
    pos = np.array(positions)
    # disulfides on the stereo-repaired geometry: a mirrored D-cysteine moves its SG
    from .chirality import repair_chirality

    n_ss = _bond_disulfides(top, repair_chirality(top, pos)[0], variants)
    # a chain emptied by dropped residues is removed (OpenMM would write an empty TER)
    if any(next(iter(c.residues()), None) is None for c in top.chains()):
        top = _without_empty_chains(top)
    return PreparedTopology(top, unit.Quantity(pos, unit.nanometer), variants, np.array(source, np.int64), n_breaks,
                            n_ss, np.array(source_residue, np.int64), dropped, free_residues)


def residue_label(residue, chain_id: str) -> str:
    code = getattr(residue, "insertion_code", "") or ""
    return f"{residue.name} {residue.resSeq}{code.strip()} (chain {chain_id})"


def _without_empty_chains(top: app.Topology) -> app.Topology:
    new = app.Topology()
    atoms = {}
    for chain in top.chains():
        residues = list(chain.residues())
        if not residues:
            continue
        c = new.addChain(chain.id)
        for res in residues:
            r = new.addResidue(res.name, c, res.id, res.insertionCode)
            for a in res.atoms():
                atoms[a] = new.addAtom(a.name, a.element, r)
    for a, b in top.bonds():
        new.addBond(atoms[a], atoms[b])
    return new


def _bond_disulfides(top: app.Topology, pos: np.ndarray, variants: list) -> int:
    sg = [a for a in top.atoms() if a.name == "SG" and a.residue.name == "CYS"]
    if len(sg) < 2:
        return 0
    n = 0
    used: set[int] = set()
    for i, j in zip(*disulfide_pairs(pos[[a.index for a in sg]], DISULFIDE_MAX / 10)):  # nm
        if i in used or j in used:
            continue
        top.addBond(sg[i], sg[j])
        used.update((i, j))
        for a in (sg[i], sg[j]):
            variants[a.residue.index] = "CYX"
        n += 1
    return n

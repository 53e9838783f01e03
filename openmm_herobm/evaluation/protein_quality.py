"""Is a backmapped protein chemically sound?  Quality metrics that need no reference structure.

For frames of CG *simulations* there is no all-atom truth; what can be judged is whether the
output is a protein a crystallographer would accept, and whether it still maps onto its beads:

* bond lengths and angles against the ideal geometry (Engh & Huber backbone, training-split
  medians for side chains: :mod:`~openmm_herobm.reconstruction.protein_geometry`), as RMSD and
  counts beyond 0.15 A;
* Ramachandran outliers (outside the 99.8% contour of the training-split density of the
  residue's class) and off-rotamer side chains (chi1 / chi2 more than 30 deg from every well of
  the training-split density);
* peptide planarity (mean |omega - 180|; peptides neither cis nor trans, |omega| 30-150 deg),
  cis non-proline peptides, CA-CA > 4.0 A between
  linked residues, chain breaks that the CG input did not have;
* bead fidelity: the output forward-mapped with the mapping set, against the input beads.

``links`` says which consecutive residues the CG input bonds: ``(resSeq, insertion code)`` pairs
from :func:`cg_links` (BB beads closer than 4.6 A); without it, peptide bonds are taken where
C-N < 2.0 A, which cannot see an inserted break.  Residues are matched by number (GRO files
have no chain ids, a refined PDB has; chains numbered alike would collide: use one chain per
call).  Everything in Angstrom/degrees.
"""

from __future__ import annotations

import math

import mdtraj
import numpy as np

from ..chemistry import BOND_OFF, PEPTIDE_BOND_MAX
from ..reconstruction import least_squares as ls
from ..reconstruction import protein_geometry as pg

OFF_ROTAMER = math.radians(30.0)
CA_CA_MAX = 4.0  # A between linked residues (trans: 3.80)
LINK_MAX = pg.PEPTIDE_LINK_MAX


def residue_key(res) -> tuple:
    return (res.resSeq, (getattr(res, "insertion_code", "") or "").strip())


def cg_links(cg: mdtraj.Trajectory, frame: int = 0, bead: str = "BB") -> set:
    """Residue-key pairs (i, i+1) of consecutive residues of one chain whose ``bead`` beads are
    closer than :data:`LINK_MAX` in the CG frame (a Martini 3 protein's backbone)."""
    out = set()
    x = cg.xyz[frame] * 10.0
    for chain in cg.topology.chains:
        prev = None
        for res in chain.residues:
            bb = next((a.index for a in res.atoms if a.name == bead), None)
            if bb is None:
                prev = None
                continue
            if prev is not None and np.linalg.norm(x[bb] - x[prev[1]]) < LINK_MAX:
                out.add((prev[0], residue_key(res)))
            prev = (residue_key(res), bb)
    return out


def _heavy_map(res) -> dict:
    name = pg.standard_name(res.name)
    out = {}
    for a in res.atoms:
        if a.element is not None and a.element.symbol in ("H", "D"):
            continue
        n = "CD1" if name == "ILE" and a.name == "CD" else a.name
        n = {"OT1": "O", "OC1": "O", "OT2": "OXT", "OC2": "OXT"}.get(n, n)
        out.setdefault(n, a.index)
    return out


def protein_quality(traj: mdtraj.Trajectory, frame: int = 0, links: set | None = None) -> dict:
    """Reference-free quality of the protein residues of ``traj`` (frame ``frame``); see the module."""
    x = traj.xyz[frame].astype(np.float64) * 10.0
    residues = [r for r in traj.topology.residues if pg.residue(r.name) is not None]
    atoms = [_heavy_map(r) for r in residues]
    keys = [residue_key(r) for r in residues]
    names = [pg.standard_name(r.name) for r in residues]
    # consecutive pairs in file order (a pipeline may split a chain at a break it inserted)
    pairs = []
    for k in range(len(residues) - 1):
        a, b = keys[k], keys[k + 1]
        if links is not None:
            if (a, b) in links:
                pairs.append(k)
        elif (residues[k].chain.index == residues[k + 1].chain.index and "C" in atoms[k] and "N" in atoms[k + 1]
              and np.linalg.norm(x[atoms[k]["C"]] - x[atoms[k + 1]["N"]]) < PEPTIDE_BOND_MAX):
            pairs.append(k)
    pairs = np.array(pairs, np.int64)
    linked_next = np.zeros(len(residues), bool)
    linked_next[pairs] = True
    chain_of = np.array([r.chain.index for r in residues])

    bond_dev, angle_dev = [], []
    for at, name in zip(atoms, names):
        entry = pg.residue(name)
        for a, b, d0, _sd in entry["bonds"]:
            if a in at and b in at:
                bond_dev.append(np.linalg.norm(x[at[a]] - x[at[b]]) - d0)
        tri = [(at[a], at[b], at[c], t0) for a, b, c, t0, _sd in entry["angles"] if a in at and b in at and c in at]
        if tri:
            t = np.array(tri)
            theta = ls.angles(x, t[:, 0].astype(int), t[:, 1].astype(int), t[:, 2].astype(int))[0]
            angle_dev.extend(np.degrees(theta) - t[:, 3])
    # peptide bonds and angles between linked residues
    ok = [k for k in pairs
          if all(n in atoms[k] for n in ("CA", "C", "O")) and all(n in atoms[k + 1] for n in ("N", "CA"))]
    ok = np.array(ok, np.int64)
    c = np.array([atoms[k]["C"] for k in ok], np.int64)
    n1 = np.array([atoms[k + 1]["N"] for k in ok], np.int64)
    ca = np.array([atoms[k]["CA"] for k in ok], np.int64)
    o = np.array([atoms[k]["O"] for k in ok], np.int64)
    ca1 = np.array([atoms[k + 1]["CA"] for k in ok], np.int64)
    out: dict = {"n_residues": len(residues), "n_peptides": len(ok)}
    if len(ok):
        cn = np.linalg.norm(x[c] - x[n1], axis=1)
        bond_dev.extend(cn - 1.329)
        for (i, j, k), t0 in (((ca, c, n1), 116.2), ((o, c, n1), 122.7), ((c, n1, ca1), 121.7)):
            angle_dev.extend(np.degrees(ls.angles(x, i, j, k)[0]) - t0)
        omega = np.degrees(ls.dihedrals(x, ca, c, n1, ca1)[0])
        is_pro = np.array([names[k + 1] == "PRO" for k in ok])
        cis = np.abs(omega) < 30.0
        trans_dev = 180.0 - np.abs(omega[~cis])
        out.update(omega_dev_mean=float(trans_dev.mean()) if len(trans_dev) else 0.0,
                   cis_nonpro=int((cis & ~is_pro).sum()), cis_pro=int((cis & is_pro).sum()),
                   nonplanar=int((~cis & (np.abs(omega) < 150.0)).sum()),
                   inserted_breaks=int((cn > PEPTIDE_BOND_MAX).sum() + (chain_of[ok] != chain_of[ok + 1]).sum()),
                   ca_ca_long=int((np.linalg.norm(x[ca] - x[ca1], axis=1)[~cis] > CA_CA_MAX).sum()))
    bond_dev, angle_dev = np.array(bond_dev), np.array(angle_dev)
    out.update(n_bonds=len(bond_dev), bond_rmsd=float(np.sqrt((bond_dev ** 2).mean())),
               bonds_off=int((np.abs(bond_dev) > BOND_OFF).sum()),
               bond_max_dev=float(np.abs(bond_dev).max()) if len(bond_dev) else 0.0,
               n_angles=len(angle_dev), angle_rmsd=float(np.sqrt((angle_dev ** 2).mean())))
    out.update(_ramachandran(x, atoms, names, linked_next))
    out.update(_rotamers(x, atoms, names))
    return out


def _ramachandran(x, atoms, names, linked_next) -> dict:
    mid = [k for k in range(1, len(atoms) - 1) if linked_next[k - 1] and linked_next[k]
           and "C" in atoms[k - 1] and all(n in atoms[k] for n in ("N", "CA", "C")) and "N" in atoms[k + 1]]
    if not mid:
        return {"rama_n": 0, "rama_outliers": 0, "rama_outlier_pct": 0.0}
    idx = lambda k, d, n: atoms[k + d][n]  # noqa: E731
    cp = np.array([idx(k, -1, "C") for k in mid])
    n, ca, c = (np.array([idx(k, 0, a) for k in mid]) for a in ("N", "CA", "C"))
    nn = np.array([idx(k, 1, "N") for k in mid])
    phi = ls.dihedrals(x, cp, n, ca, c)[0]
    psi = ls.dihedrals(x, n, ca, c, nn)[0]
    cls = np.array([pg.rama_class(names[k], names[k + 1]) for k in mid])
    outlier = pg.rama_outliers(cls, phi, psi)
    return {"rama_n": len(mid), "rama_outliers": int(outlier.sum()),
            "rama_outlier_pct": float(100.0 * outlier.mean())}


def _rotamers(x, atoms, names) -> dict:
    out = {}
    for k in (1, 2):
        off, total = 0, 0
        by_type: dict = {}
        for at, name in zip(atoms, names):
            if pg.chi_wells(name, k) is None:
                continue
            q = pg.residue(name)["chis"][k - 1]
            if not all(a in at for a in q):
                continue
            by_type.setdefault(name, []).append([at[a] for a in q])
        for name, quads in by_type.items():
            qd = np.array(quads)
            chi = ls.dihedrals(x, *qd.T)[0]
            d = pg.distance_to_wells(name, k, chi)
            off += int((d > OFF_ROTAMER).sum())
            total += len(d)
        out[f"chi{k}_n"] = total
        out[f"chi{k}_off"] = off
        out[f"chi{k}_off_pct"] = 100.0 * off / total if total else 0.0
    return out


def bead_fidelity(traj: mdtraj.Trajectory, cg: mdtraj.Trajectory, mapping="martini3", frame: int = 0,
                  cg_frame: int = 0) -> dict:
    """RMS and max distance (A) between the beads of ``traj`` (forward-mapped with ``mapping``,
    frame ``frame``) and the beads of ``cg`` (frame ``cg_frame``), matched by residue key and bead
    name; beads of residues either side lacks are left out."""
    from ..mapping import MappingSet, SystemMapping

    ms = mapping if isinstance(mapping, MappingSet) else MappingSet.load(mapping)
    heavy = [a.index for a in traj.topology.atoms if a.element is None or a.element.symbol not in ("H", "D")]
    sub = traj.atom_slice(heavy) if len(heavy) < traj.n_atoms else traj
    system = SystemMapping.from_atomistic(sub.topology, ms, unmapped="drop", incomplete="skip")
    mapped = system.map(sub.xyz[frame:frame + 1] * 10.0)[0]
    ours = {}
    for a in system.cg_topology.atoms:
        ours[residue_key(a.residue) + (a.name,)] = a.index
    x_in = cg.xyz[cg_frame] * 10.0
    d = []
    for a in cg.topology.atoms:
        key = residue_key(a.residue) + (a.name,)
        if key in ours:
            d.append(np.linalg.norm(mapped[ours[key]] - x_in[a.index]))
    d = np.array(d)
    return {"beads_compared": len(d), "bead_rms": float(np.sqrt((d ** 2).mean())) if len(d) else None,
            "bead_max": float(d.max()) if len(d) else None}

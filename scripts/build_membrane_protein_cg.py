#!/usr/bin/env python
"""A Martini 3 CG frame of a transmembrane helix in a POPC/cholesterol bilayer, for the membrane example.

The data hold no CG simulation of a membrane protein, so one is assembled from real
structures and mapped with the same forward mapping users' CG inputs get:

* the bilayer: the CHARMM36 snapshot ``charmm36_POPCchol-0pct`` (128 POPC, 5120 waters),
  mapped to Martini 3 beads; ``--cholesterol`` POPC per leaflet are swapped for Martini 3
  cholesterols (the CG beads of real CHARMM36 cholesterols of ``charmm36_POPCchol-20pct``,
  whose own box is unusable: its atoms overlap), ROH at the POPC's GL1 bead, the sterol axis
  along the POPC's PO4 -> tail-ends axis, spun until no bead is within 0.35 nm of another
  molecule's bead (else that swap is skipped);
* the protein: the 24-residue helix 372-395 of test chain ``pb_7SFO_98L_A``
  (LHDQVHLLECAWLEILMIGLVWRS, hydrophobic middle, polar ends), mapped with ``martini3``,
  its axis put along the bilayer normal (z) at the box centre;
* lipids with a bead within ``--clearance`` of a protein bead are removed (whole molecules);
* water: one W bead per four waters (the oxygen of every fourth water, so the bead density
  is Martini's), minus those within ``--clearance`` of the protein; ``--ions`` W beads far
  from the protein become NA and as many CL (~0.15 M).

    python scripts/build_membrane_protein_cg.py -o examples/data/tm_helix_popc_chol_cg.gro
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mdtraj
import numpy as np

from openmm_herobm.io import load_structure, make_whole, save_structure
from openmm_herobm.mapping import map_structure

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
MEMBRANE = DATA / "lipids" / "charmm36_POPCchol-0pct.gro.gz"
STEROLS = DATA / "lipids" / "charmm36_POPCchol-20pct.gro.gz"
PROTEIN = DATA / "proteins" / "test" / "pb_7SFO_98L_A.pdb.gz"
HELIX = (372, 395)


def min_image(d: np.ndarray, box: np.ndarray) -> np.ndarray:
    return d - box * np.round(d / box)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--clearance", type=float, default=0.45, help="nm between protein beads and kept lipid/W beads")
    ap.add_argument("--ions", type=int, default=12, help="NA and CL beads each")
    ap.add_argument("--cholesterol", type=int, default=12, help="POPC swapped for cholesterol, per leaflet")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)

    aa = make_whole(load_structure(str(MEMBRANE)))
    box = aa.unitcell_lengths[0].astype(np.float64)
    lipids = map_structure(aa.atom_slice(aa.topology.select("resname POPC")), "martini3_lipids").cg
    sterol_aa = make_whole(load_structure(str(STEROLS)))
    sterols = map_structure(sterol_aa.atom_slice(sterol_aa.topology.select("resname CHL")), "martini3_lipids").cg
    oxygens = aa.topology.select("resname SOL and name OW")[::4]
    water_xyz = aa.xyz[0, oxygens].astype(np.float64)

    chain = load_structure(str(PROTEIN))
    helix = chain.atom_slice(chain.topology.select(f"resSeq {HELIX[0]} to {HELIX[1]}"))
    protein = map_structure(helix, "martini3").cg
    p = protein.xyz[0].astype(np.float64)
    ca = helix.xyz[0, helix.topology.select("name CA")].astype(np.float64)
    axis = np.linalg.svd(ca - ca.mean(0))[2][0]
    axis *= np.sign(axis @ (ca[-1] - ca[0]))
    rotation = _rotation_onto(axis, np.array([0.0, 0.0, 1.0]))
    heads = lipids.xyz[0, lipids.topology.select("name PO4")].astype(np.float64)
    centre = np.array([box[0] / 2, box[1] / 2, heads[:, 2].mean()])
    p = (p - p.mean(0)) @ rotation.T + centre

    def clash(xyz):  # (n, 3) -> (n,) any protein bead within the clearance (periodic in x, y, z)
        d = min_image(xyz[:, None, :] - p[None], box)
        return (np.linalg.norm(d, axis=-1) < args.clearance).any(1)

    lipids = _swap_in_cholesterol(lipids, sterols, p, box, args.cholesterol, rng)
    lip_xyz = lipids.xyz[0].astype(np.float64)
    bead_res = np.array([a.residue.index for a in lipids.topology.atoms])
    bad = np.unique(bead_res[clash(lip_xyz)])
    keep = np.nonzero(~np.isin(bead_res, bad))[0]
    water_xyz = water_xyz[~clash(water_xyz)]
    # ions: W beads at least 1.5 nm from the protein and outside the head-group planes
    far = ~(np.linalg.norm(min_image(water_xyz[:, None, :2] - p[None, :, :2], box[:2]), axis=-1) < 1.5).any(1)
    far &= np.abs(min_image(water_xyz[:, 2:] - centre[2], box[2:]))[:, 0] > 2.5
    ion_rows = rng.choice(np.nonzero(far)[0], 2 * args.ions, replace=False)
    is_ion = np.zeros(len(water_xyz), bool)
    is_ion[ion_rows] = True

    top = mdtraj.Topology()
    xyz = []
    _append(top, xyz, protein.topology, p)
    lip_top = lipids.atom_slice(keep)
    _append(top, xyz, lip_top.topology, lip_xyz[keep])
    solvent = top.add_chain()
    for pos in water_xyz[~is_ion]:
        top.add_atom("W", mdtraj.element.virtual_site, top.add_residue("W", solvent))
        xyz.append(pos)
    for k, pos in enumerate(water_xyz[is_ion]):
        name = "NA" if k < args.ions else "CL"
        top.add_atom(name, mdtraj.element.virtual_site, top.add_residue("ION", solvent))
        xyz.append(pos)
    frame = mdtraj.Trajectory(np.array(xyz, np.float32)[None], top)
    frame.unitcell_vectors = aa.unitcell_vectors
    save_structure(frame, args.output)
    names = [r.name for r in lip_top.topology.residues]
    print(f"wrote {args.output}: helix of {protein.topology.n_residues} residues, {names.count('POPC')} POPC, "
          f"{names.count('CHOL')} CHOL ({len(bad)} lipids removed), {int((~is_ion).sum())} W, "
          f"{args.ions} NA + {args.ions} CL; box {np.round(box, 3).tolist()} nm")


def _swap_in_cholesterol(lipids: mdtraj.Trajectory, sterols: mdtraj.Trajectory, protein: np.ndarray,
                         box: np.ndarray, per_leaflet: int, rng) -> mdtraj.Trajectory:
    """``per_leaflet`` POPC of each leaflet (at least 1.5 nm from the protein) replaced by a CG cholesterol."""
    top, xyz = lipids.topology, lipids.xyz[0].astype(np.float64)
    popc = [r for r in top.residues if r.name == "POPC"]
    beads = {r.index: {a.name: xyz[a.index] for a in r.atoms} for r in popc}
    mid = np.mean([b["PO4"][2] for b in beads.values()])
    sterol_res = [r for r in sterols.topology.residues]
    sxyz = sterols.xyz[0].astype(np.float64)
    replaced: dict[int, np.ndarray] = {}  # POPC residue index -> cholesterol bead positions
    for upper in (True, False):
        leaflet = [r for r in popc if (beads[r.index]["PO4"][2] > mid) == upper]
        rng.shuffle(leaflet)
        done = 0
        for r in leaflet:
            b = beads[r.index]
            lateral = min_image(protein[:, :2] - b["GL1"][:2], box[:2])
            if done == per_leaflet or np.linalg.norm(lateral, axis=1).min() < 1.5:
                continue
            axis = (b["C4A"] + b["C4B"]) / 2 - b["PO4"]
            axis /= np.linalg.norm(axis)
            template = sxyz[[a.index for a in sterol_res[len(replaced) % len(sterol_res)].atoms]]
            names = [a.name for a in sterol_res[0].atoms]
            roh, tail = template[names.index("ROH")], template[names.index("C2")]
            own = _rotation_onto((tail - roh) / np.linalg.norm(tail - roh), axis)
            others = np.concatenate([xyz[[a.index for a in q.atoms]] for q in top.residues
                                     if q.index != r.index and q.index not in replaced]
                                    + list(replaced.values()) + [protein])
            for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False):
                spin = _axis_rotation(axis, angle + rng.uniform(0, np.pi / 6))
                placed = ((template - roh) @ own.T) @ spin.T + b["GL1"]
                d = min_image(placed[:, None, :] - others[None], box)
                if np.linalg.norm(d, axis=-1).min() > 0.35:
                    replaced[r.index] = placed
                    done += 1
                    break
    new = mdtraj.Topology()
    new_xyz = []
    chain = new.add_chain()
    for r in top.residues:
        if r.index in replaced:
            residue = new.add_residue("CHOL", chain, resSeq=r.resSeq)
            for a in sterol_res[0].atoms:
                new.add_atom(a.name, a.element, residue)
            new_xyz.extend(replaced[r.index])
        else:
            residue = new.add_residue(r.name, chain, resSeq=r.resSeq)
            for a in r.atoms:
                new.add_atom(a.name, a.element, residue)
                new_xyz.append(xyz[a.index])
    return mdtraj.Trajectory(np.array(new_xyz, np.float32)[None], new)


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


def _append(top: mdtraj.Topology, xyz: list, source: mdtraj.Topology, positions: np.ndarray) -> None:
    for chain in source.chains:
        new_chain = top.add_chain()
        for residue in chain.residues:
            new_residue = top.add_residue(residue.name, new_chain, resSeq=residue.resSeq)
            for atom in residue.atoms:
                top.add_atom(atom.name, atom.element, new_residue)
                xyz.append(positions[atom.index])


def _rotation_onto(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation matrix taking unit vector ``a`` onto unit vector ``b`` (Rodrigues)."""
    v, c = np.cross(a, b), float(a @ b)
    if np.linalg.norm(v) < 1e-8:
        return np.eye(3) if c > 0 else np.diag([1.0, -1.0, -1.0])
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


if __name__ == "__main__":
    main()

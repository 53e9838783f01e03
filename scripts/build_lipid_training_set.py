#!/usr/bin/env python
"""All-atom bilayers for training and testing the Martini 3 lipid model (POPC + cholesterol).

Test: the one bilayer with cholesterol (``charmm36_POPCchol-20pct``: 100 POPC, 24 CHL) is
held out whole.  Training: the eight POPC-only CHARMM36 bilayers, where ``--fraction`` of the
POPC molecules (seeded) are replaced by generated cholesterol conformations
(``scripts/generate_cholesterol_conformers.py``), so that cholesterol beads are seen inside a
bilayer: each cholesterol is placed with O3 at the removed POPC's glycerol C2 and its
O3 -> C25 axis along that POPC's P -> tail-ends axis, with a random spin about that axis.
Molecules are made whole across the periodic box; water and ions are dropped (the model only
needs lipid beads).  Outputs: ``<out>/train/*.gro`` (the last one, ``--val`` of them, goes to
``<out>/val/``) and ``<out>/test/*.gro``, then::

    herobm dataset OUT/train -m martini3_lipids -o /work/data/lipids_train.npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mdtraj
import numpy as np

from openmm_herobm.io import load_structure, make_whole

LIPIDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "lipids"
TEST = "charmm36_POPCchol-20pct"
KEEP = ("POPC", "CHL")


def _rotation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Rotation matrix taking unit vector a onto unit vector b."""
    v, c = np.cross(a, b), float(np.dot(a, b))
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def _spin(axis: np.ndarray, angle: float) -> np.ndarray:
    k = axis / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


def lipids_only(path: Path) -> mdtraj.Trajectory:
    traj = make_whole(load_structure(str(path), frames=0))
    keep = [a.index for a in traj.topology.atoms if a.residue.name in KEEP]
    out = traj.atom_slice(keep)
    return _isolated(out)


def _isolated(traj: mdtraj.Trajectory) -> mdtraj.Trajectory:
    """Whole molecules in a 50 nm box: no periodic images (the box of some snapshots does not
    match their atoms), and a .gro file (PDB cuts POPC to POP) needs a box."""
    traj.unitcell_vectors = np.eye(3, dtype=np.float32)[None] * 50.0
    traj.xyz -= traj.xyz.min(axis=1, keepdims=True) - 1.0
    return traj


def embed_cholesterol(traj: mdtraj.Trajectory, conformers: mdtraj.Trajectory, fraction: float,
                      rng: np.random.Generator) -> mdtraj.Trajectory:
    top, xyz = traj.topology, traj.xyz[0]
    popc = [r for r in top.residues if r.name == "POPC"]
    chosen = set(rng.choice(len(popc), size=int(round(fraction * len(popc))), replace=False).tolist())
    c_names = {a.name: a.index for a in conformers.topology.atoms}
    new_top, new_xyz = mdtraj.Topology(), []
    chain = new_top.add_chain()
    for k, res in enumerate(r for r in top.residues):
        if res.name == "POPC" and popc.index(res) in chosen:
            continue
        r = new_top.add_residue(res.name, chain, resSeq=len(list(new_top.residues)) + 1)
        for a in res.atoms:
            new_top.add_atom(a.name, a.element, r)
            new_xyz.append(xyz[a.index])
    for i in sorted(chosen):
        atoms = {a.name: a.index for a in popc[i].atoms}
        tails = 0.5 * (xyz[atoms["C218"]] + xyz[atoms["C316"]])
        axis = tails - xyz[atoms["P"]]
        axis /= np.linalg.norm(axis)
        conf = conformers.xyz[rng.integers(conformers.n_frames)].astype(np.float64)
        own = conf[c_names["C25"]] - conf[c_names["O3"]]
        rot = _spin(axis, rng.uniform(0, 2 * np.pi)) @ _rotation(own / np.linalg.norm(own), axis)
        placed = (conf - conf[c_names["O3"]]) @ rot.T + xyz[atoms["C2"]]
        r = new_top.add_residue("CHL", chain, resSeq=len(list(new_top.residues)) + 1)
        for a in conformers.topology.atoms:
            new_top.add_atom(a.name, a.element, r)
        new_xyz.extend(placed)
    return _isolated(mdtraj.Trajectory(np.array(new_xyz, np.float32)[None], new_top))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lipids-dir", default=str(LIPIDS))
    ap.add_argument("--conformers", required=True, help="output of generate_cholesterol_conformers.py")
    ap.add_argument("--out", required=True, help="folder for train/, val/ and test/")
    ap.add_argument("--fraction", type=float, default=0.25, help="share of POPC replaced by cholesterol")
    ap.add_argument("--copies", type=int, default=2, help="differently seeded embeddings per training bilayer")
    ap.add_argument("--val", type=int, default=1, help="training bilayers kept for validation")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    conformers = mdtraj.load(args.conformers)
    out = Path(args.out)
    files = sorted(Path(args.lipids_dir).glob("*.gro*"))
    train = [f for f in files if not f.name.startswith(TEST)]
    for split in ("train", "val", "test"):
        (out / split).mkdir(parents=True, exist_ok=True)
    for k, path in enumerate(train):
        split = "val" if k >= len(train) - args.val else "train"
        base = lipids_only(path)
        for copy in range(args.copies if split == "train" else 1):
            embedded = embed_cholesterol(base, conformers, args.fraction, rng)
            target = out / split / f"{path.name.split('.')[0]}_chol{copy}.gro"
            embedded.save_gro(str(target))
            print(f"{target}: {sum(r.name == 'POPC' for r in embedded.topology.residues)} POPC, "
                  f"{sum(r.name == 'CHL' for r in embedded.topology.residues)} CHL")
    for path in files:
        if path.name.startswith(TEST):
            test = lipids_only(path)
            target = out / "test" / f"{path.name.split('.')[0]}.gro"
            test.save_gro(str(target))
            print(f"{target}: held-out test bilayer, {test.topology.n_residues} lipids")


if __name__ == "__main__":
    main()

"""Ideal side-chain geometry of the 20 amino acids, measured on real training chains.

Writes ``openmm_herobm/reconstruction/side_chain_geometry.json``: per residue name, the
median length of every bond, the median of every bond angle, and the circular mean of
every proper or improper dihedral that is rigid in real structures (circular standard
deviation below ``--max-spread`` degrees: ring and planar-group torsions, and the
impropers that fix the handedness of CA, ILE CB and THR CB).  Free torsions (chi angles)
are left out: the side-chain fit takes them from the network and the beads.

    python scripts/build_side_chain_geometry.py ../shared/data/proteins/train --limit 150
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import defaultdict
from pathlib import Path

import mdtraj
import numpy as np

from openmm_herobm.geometry import dihedral

BACKBONE = {"N", "CA", "C", "O"}
OUT = Path(__file__).resolve().parents[1] / "openmm_herobm" / "reconstruction" / "side_chain_geometry.json"
AMINO_ACIDS = {"ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU", "LYS", "MET",
               "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL"}


def residue_terms(names: list[str], bonds: set[tuple[str, str]]):
    """Bonds, angles, proper and improper dihedrals (atom-name tuples) touching the side chain."""
    nbr = defaultdict(set)
    for a, b in bonds:
        nbr[a].add(b)
        nbr[b].add(a)
    side = lambda t: any(n not in BACKBONE for n in t)  # noqa: E731
    bond_list = sorted({tuple(sorted(b)) for b in bonds if side(b)})
    angles = sorted({(a, b, c) for b in nbr for a, c in itertools.combinations(sorted(nbr[b]), 2) if side((a, b, c))})
    propers = sorted({(a, b, c, d) for b, c in bonds for a in nbr[b] - {c} for d in nbr[c] - {b, a}
                      if side((a, b, c, d))})
    impropers = sorted({(a, b, c, d) for b in nbr if len(nbr[b]) >= 3
                        for a, c, d in [sorted(nbr[b])[:3]] if side((a, b, c, d))})
    return bond_list, angles, propers, impropers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="folder of all-atom PDB(.gz) chains")
    ap.add_argument("--limit", type=int, default=150, help="chains to read (default 150)")
    ap.add_argument("--max-spread", type=float, default=15.0, help="keep dihedrals with circular SD below this (deg)")
    ap.add_argument("-o", "--output", default=str(OUT))
    args = ap.parse_args()

    samples: dict[str, list[np.ndarray]] = defaultdict(list)
    names_of: dict[str, list[str]] = {}
    bonds_of: dict[str, set] = {}
    for path in sorted(Path(args.folder).glob("*.pdb*"))[:args.limit]:
        traj = mdtraj.load(str(path))
        top = traj.topology
        bonded = defaultdict(set)
        for a, b in top.bonds:
            if a.residue is b.residue and a.element.symbol != "H" and b.element.symbol != "H":
                bonded[a.residue.index].add((a.name, b.name))
        for res in top.residues:
            if res.name not in AMINO_ACIDS or res.name == "GLY":
                continue
            heavy = {a.name: a.index for a in res.atoms if a.element.symbol != "H"}
            if res.name not in names_of:
                want = sorted(heavy) if {"N", "CA", "C", "CB"} <= set(heavy) else None
                if want is None:
                    continue
                names_of[res.name] = want
                bonds_of[res.name] = {tuple(sorted(b)) for b in bonded[res.index]}
            want = names_of[res.name]
            if set(heavy) != set(want) or {tuple(sorted(b)) for b in bonded[res.index]} != bonds_of[res.name]:
                continue
            samples[res.name].append(traj.xyz[0, [heavy[n] for n in want]] * 10.0)

    table = {}
    for name, xyz_list in sorted(samples.items()):
        xyz = np.stack(xyz_list)
        col = {n: i for i, n in enumerate(names_of[name])}
        bonds, angles, propers, impropers = residue_terms(names_of[name], bonds_of[name])
        entry = {"n": len(xyz), "bonds": [], "angles": [], "dihedrals": []}
        for a, b in bonds:
            d = np.linalg.norm(xyz[:, col[a]] - xyz[:, col[b]], axis=1)
            entry["bonds"].append([a, b, round(float(np.median(d)), 4)])
        for a, b, c in angles:
            u, v = xyz[:, col[a]] - xyz[:, col[b]], xyz[:, col[c]] - xyz[:, col[b]]
            t = np.degrees(np.arctan2(np.linalg.norm(np.cross(u, v), axis=1), (u * v).sum(1)))
            entry["angles"].append([a, b, c, round(float(np.median(t)), 2)])
        for quad in propers + impropers:
            t = dihedral(*(xyz[:, col[q]] for q in quad))
            mean = np.angle(np.exp(1j * t).mean())
            spread = np.degrees(np.sqrt(-2.0 * np.log(max(abs(np.exp(1j * t).mean()), 1e-12))))
            if spread < args.max_spread:
                entry["dihedrals"].append([*quad, round(float(np.degrees(mean)), 2), round(float(spread), 1)])
        table[name] = entry
        print(f"{name}: {len(xyz)} residues, {len(entry['bonds'])} bonds, {len(entry['angles'])} angles, "
              f"{len(entry['dihedrals'])} rigid dihedrals")
    Path(args.output).write_text(json.dumps({"source": f"{args.folder} ({args.limit} chains)",
                                             "max_spread_deg": args.max_spread, "residues": table}, indent=1) + "\n")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

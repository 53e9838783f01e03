"""The deformation model of Martini 3 simulation beads: how MD beads sit relative to mapped beads.

Martini 3's bonded parameters are not the distances between heavy-atom centres of a real
structure: they come from centres of geometry with hydrogens, and rings are built larger
than their atoms on purpose (shape and volume).  In a Martini 3 simulation an ALA SC1 sits
2.70 A from its BB bead (mapped: 2.17), a PHE ring triangle has 3.4 A sides (mapped: 2.4).
No real structure maps onto such beads; backmapping them as if they were mapped beads
distorts whatever is built.

For every residue type this measures, over the training chains' Martini 3 MD frames
(``scripts/make_real_frames.py --split train``) and their mapped crystal beads, the mean
length of each edge of the residue's bead tree (BB the root; every other bead hangs on the
bead before it in the mapping that is closest to it in mapped structures), in MD and
mapped.  :class:`openmm_herobm.mapping.deformation.BeadDeformation` scales each edge of an
input frame back by ``mapped / MD`` (to the power of the frame's own MD-likeness, 0 for a
mapped structure, 1 for an MD frame).

    python scripts/build_bead_deformation.py --frames-dir out/real_frames --split train
    python scripts/build_bead_deformation.py --mapping martini3_lipids \
        --mapped ../shared/data/lipids/*.gro.gz --md ../shared/data/cg_real/mstool_mix8_419lipids.gro.gz

The second form measures the lipids of a mapping set: ``--mapped`` all-atom structures (mapped
here with the mapping set) against ``--md`` Martini 3 frames of the same molecules.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import mdtraj
import numpy as np

OUT = Path(__file__).resolve().parents[1] / "openmm_herobm" / "mapping"


def residues_of(traj):
    for res in traj.topology.residues:
        yield res.name, [a.name for a in res.atoms], [a.index for a in res.atoms]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames-dir", type=Path, default=Path("out/real_frames"))
    ap.add_argument("--split", default="train")
    ap.add_argument("--mapping", default="martini3")
    ap.add_argument("--mapped", nargs="*", help="all-atom structures to map (instead of --frames-dir)")
    ap.add_argument("--md", nargs="*", help="Martini 3 frames of the same molecules (with --mapped)")
    ap.add_argument("-o", "--output", type=Path)
    args = ap.parse_args()
    output = args.output or OUT / f"deformation_{args.mapping}.json"

    if args.mapped:
        import openmm_herobm as hb

        pairs = [("mapped", hb.map_structure(p, args.mapping, unmapped="drop").cg) for p in args.mapped]
        from openmm_herobm.io import load_structure

        pairs += [("md", load_structure(p)) for p in args.md]
        source = f"mapped: {', '.join(args.mapped)}; MD: {', '.join(args.md)}"
    else:
        folders = sorted(p.parent for p in (args.frames_dir / args.split).glob("*/*/md.xtc"))
        pairs = []
        for folder in folders:
            pairs += [("mapped", mdtraj.load(str(folder / "cg.pdb"))),
                      ("md", mdtraj.load(str(folder / "md.xtc"), top=str(folder / "md.gro")))]
        source = (f"{args.frames_dir}/{args.split}: {len(folders)} trajectories (scripts/make_real_frames.py), "
                  "cg.pdb = mapped crystal beads, md.xtc = Martini 3 MD frames")
    mapped_pairs: dict = defaultdict(lambda: defaultdict(list))  # (res, a, b) -> distances
    md_pairs: dict = defaultdict(lambda: defaultdict(list))
    order: dict = {}
    for label, traj in pairs:
        store = mapped_pairs if label == "mapped" else md_pairs
        x = traj.xyz * 10.0
        for name, beads, index in residues_of(traj):
            order.setdefault(name, beads)
            if beads != order[name]:
                continue
            for i in range(len(beads)):
                for j in range(i):
                    store[name][(beads[j], beads[i])].extend(np.linalg.norm(x[:, index[i]] - x[:, index[j]], axis=1))
    table = {}
    for name, beads in sorted(order.items()):
        if len(beads) < 2 or name not in md_pairs or name not in mapped_pairs:
            continue
        edges = []
        for i in range(1, len(beads)):
            mean = {beads[j]: float(np.mean(mapped_pairs[name][(beads[j], beads[i])])) for j in range(i)}
            parent = min(mean, key=mean.get)
            m = np.array(mapped_pairs[name][(parent, beads[i])])
            d = np.array(md_pairs[name][(parent, beads[i])])
            edges.append({"parent": parent, "child": beads[i], "mapped": round(float(m.mean()), 3),
                          "mapped_sd": round(float(m.std()), 3), "md": round(float(d.mean()), 3),
                          "md_sd": round(float(d.std()), 3), "n_md": int(len(d))})
        table[name] = {"beads": beads, "edges": edges}
        print(name, "  ".join(f"{e['parent']}-{e['child']} {e['mapped']:.2f}->{e['md']:.2f}" for e in edges))
    out = {"mapping_set": args.mapping, "source": source, "residues": table}
    output.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

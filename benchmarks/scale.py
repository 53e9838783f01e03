#!/usr/bin/env python
"""Model stage (``backmap``, heavy atoms, the default fit) of whole Martini 3 membrane frames of
1k to 200k beads: seconds and peak memory.

Systems: the real Martini 3 membrane frame ``shared/data/cg_real/mstool_mix8_419lipids.gro.gz``
(10.2 x 10.2 x 11.6 nm, 11,405 beads: 8 lipid types, water, ions) tiled in the membrane plane
until the bead count is reached, plus one protein chain (a test chain mapped with the martini3
set) placed in the water above the bilayer; the last copy is cut at a residue boundary.  The
shipped models know the protein and every lipid of the frame (anything unknown would be left
out: ``unmapped="drop"``); water and ions are solvent (the full pipeline rebuilds them), so the
beads the models see are fewer than the frame's: both counts are printed.

Every size runs in a fresh Python process (``--worker``) so peak RSS
(``getrusage(RUSAGE_SELF).ru_maxrss``) is its own; times: loading the models, then
``backmap(frame, unmapped="drop")`` end to end (whole molecules, mapping, network, fit).

    python benchmarks/scale.py --sizes 1000 10000 100000 200000 --out benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from _common import write_result

ROOT = Path(__file__).resolve().parent.parent
MEMBRANE = ROOT.parent / "shared" / "data" / "cg_real" / "mstool_mix8_419lipids.gro.gz"
PROTEIN = ROOT.parent / "shared" / "data" / "proteins" / "test" / "bm5_1EXB_l_u_B.pdb.gz"
MARKER = "@@SCALE@@ "


def build(n_beads: int):
    """The tiled membrane + protein frame of at most ``n_beads`` beads (whole residues)."""
    import mdtraj

    from openmm_herobm import map_structure
    from openmm_herobm.io import load_structure

    membrane = load_structure(str(MEMBRANE))
    protein = map_structure(str(PROTEIN), "martini3", incomplete="skip").cg
    box = membrane.unitcell_vectors[0].diagonal()
    pxyz = protein.xyz[0] - protein.xyz[0].mean(0)
    pieces, total = [], 0
    # the protein first (so every size has it), centred in x-y, in the water above the bilayer
    pieces.append((protein.topology, pxyz + np.array([box[0] / 2, box[1] / 2, box[2] - 1.0 - pxyz[:, 2].max()])))
    total += protein.n_atoms
    side = int(np.ceil(np.sqrt(max(n_beads / membrane.n_atoms, 1))))
    for k in range(side * side):
        if total >= n_beads:
            break
        i, j = divmod(k, side)
        pieces.append((membrane.topology, membrane.xyz[0] + np.array([i * box[0], j * box[1], 0.0])))
        total += membrane.n_atoms
    top = mdtraj.Topology()
    xyz = []
    for topology, coordinates in pieces:
        for residue in topology.residues:
            atoms = [a.index for a in residue.atoms]
            if len(xyz) + len(atoms) > n_beads:
                break
            chain = top.add_chain() if residue.index == 0 or not top.n_chains else top.chain(top.n_chains - 1)
            r = top.add_residue(residue.name, chain, resSeq=residue.resSeq)
            for a in residue.atoms:
                top.add_atom(a.name, a.element, r)
            xyz.extend(coordinates[atoms])
    xyz = np.array(xyz, np.float32)[None]
    cell = np.diag([side * box[0], side * box[1], box[2]]).astype(np.float32)[None]
    return mdtraj.Trajectory(xyz, top, unitcell_lengths=np.diag(cell[0])[None],
                             unitcell_angles=np.full((1, 3), 90.0, np.float32))


def worker(n_beads: int, threads: int) -> dict:
    from openmm_herobm import set_threads

    set_threads(threads)
    import openmm_herobm as hb
    from openmm_herobm.model import load_model, shipped_models

    frame = build(n_beads)
    t = time.perf_counter()
    models = [load_model(m) for m in shipped_models()]
    load = time.perf_counter() - t
    t = time.perf_counter()
    result = hb.backmap(frame, models, unmapped="drop")
    seconds = time.perf_counter() - t
    names = {r.name for r in frame.topology.residues}
    return {"beads": frame.n_atoms, "beads_backmapped": int(sum(p.system.n_beads for p in result.parts)),
            "atoms_out": result.trajectory.n_atoms, "residue_names": len(names), "load_models_s": round(load, 2),
            "backmap_s": round(seconds, 2), "beads_per_s": round(frame.n_atoms / seconds, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 200000])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if args.worker:
        print(MARKER + json.dumps(worker(args.worker, args.threads)), flush=True)
        return 0
    rows = []
    for n in args.sizes:
        done = subprocess.run([sys.executable, __file__, "--worker", str(n), "--threads", str(args.threads)],
                              capture_output=True, text=True)
        line = next((x for x in done.stdout.splitlines() if x.startswith(MARKER)), None)
        if line is None:
            raise SystemExit(f"size {n} failed: {done.stderr[-800:]}")
        rows.append(json.loads(line[len(MARKER):]))
        print(f"{n}: {rows[-1]}", file=sys.stderr)
    lines = [f"threads {args.threads}",
             "| beads in the frame | beads backmapped | atoms out | backmap (s) | beads/s (frame) | peak RSS (MB) |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['beads']:,} | {r['beads_backmapped']:,} | {r['atoms_out']:,} | {r['backmap_s']:.1f} | "
              f"{r['beads_per_s']:,.0f} | {r['peak_rss_mb']:,.0f} |" for r in rows]
    print("\n".join(lines))
    write_result(args.out, threads=args.threads, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

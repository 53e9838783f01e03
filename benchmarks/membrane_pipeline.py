#!/usr/bin/env python
"""The full pipeline (model, hydrogens, CHARMM36 system, minimisation) of a membrane protein
system of ~20k backmapped beads: seconds and peak memory per stage, progress printed all along.

System: the bundled Martini 3 membrane-protein frame ``examples/data/tm_helix_popc_chol_cg.gro.gz``
(a transmembrane helix in POPC/cholesterol, 6.2 x 6.5 nm) tiled ``--tiles NX NY`` times in the
membrane plane, its CG water and ions left out (solvent is the pipeline's to rebuild; here the
refinement runs in vacuum or implicit solvent, in the periodic box).  5 x 3 tiles: 15 helices,
17,640 POPC and 1,890 cholesterol beads, 20,790 beads in all, ~120k atoms with hydrogens.

Each stage's time and the process's peak RSS when it ended come from a reporter
(``openmm_herobm.ProgressReporter`` prints the same events to stderr as they happen).

    python benchmarks/membrane_pipeline.py --tiles 5 3 --out benchmarks/results/membrane_pipeline.json
    python benchmarks/membrane_pipeline.py --tiles 9 8 --solvent vacuum --no-minimize   # ~100k beads
"""

from __future__ import annotations

import argparse
import gzip
import resource
import sys
import tempfile
import time
from pathlib import Path

from _common import write_result

ROOT = Path(__file__).resolve().parent.parent
FRAME = ROOT / "examples" / "data" / "tm_helix_popc_chol_cg.gro.gz"
SOLVENT = ("W", "ION", "NA", "CL")


def tile(nx: int, ny: int, path: Path) -> int:
    """Write the frame tiled nx x ny in the xy plane, without its solvent; returns the bead count."""
    lines = gzip.open(FRAME, "rt").read().splitlines()
    atoms = [line for line in lines[2:-1] if line[5:10].strip() not in SOLVENT]
    box = [float(v) for v in lines[-1].split()[:3]]
    out, residue, serial = [], 0, 0
    for i in range(nx):
        for j in range(ny):
            last = None
            for line in atoms:
                if line[:5] != last:
                    residue, last = residue + 1, line[:5]
                serial += 1
                x, y, z = (float(line[20 + 8 * k:28 + 8 * k]) for k in range(3))
                out.append(f"{residue % 100000:5d}{line[5:10]}{line[10:15]}{serial % 100000:5d}"
                           f"{x + i * box[0]:8.3f}{y + j * box[1]:8.3f}{z:8.3f}")
    path.write_text(f"{nx}x{ny} tiles of {FRAME.name}\n{len(out)}\n" + "\n".join(out)
                    + f"\n{box[0] * nx:10.5f}{box[1] * ny:10.5f}{box[2]:10.5f}\n")
    return len(out)


class StageMemory:
    """Seconds and peak RSS (MB, so far) at the end of every stage, summed over frames."""

    def __init__(self):
        self.rows: list[dict] = []
        self.t0 = time.perf_counter()

    def report(self, event) -> None:
        if event.done:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.rows.append({"stage": event.stage, "seconds": round(event.elapsed, 1),
                              "peak_rss_mb": round(rss), "wall_s": round(time.perf_counter() - self.t0, 1),
                              "energy_kj_mol": event.energy})


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiles", type=int, nargs=2, default=(5, 3), metavar=("NX", "NY"))
    ap.add_argument("--solvent", default="implicit", choices=("implicit", "vacuum"))
    ap.add_argument("--threads", type=int, default=None, help="torch/OpenMM threads (default: the policy's)")
    ap.add_argument("--output", type=Path, default=None, help="keep the refined structure here (PDB/mmCIF)")
    ap.add_argument("--no-minimize", action="store_true",
                    help="stop after the force-field system (the stages before minimisation, at sizes where "
                         "minimising would take hours)")
    ap.add_argument("--out", type=Path, default=None, help="JSON result")
    args = ap.parse_args(argv)

    import openmm_herobm as hb

    threads = hb.set_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        frame = Path(tmp) / "membrane.gro"
        n_beads = tile(*args.tiles, frame)
        print(f"{n_beads} beads ({args.tiles[0]} x {args.tiles[1]} tiles), solvent {args.solvent}, "
              f"{threads} thread(s)", file=sys.stderr)
        memory = StageMemory()
        start = time.perf_counter()
        result = hb.backmap_and_simulate(str(frame), solvent=None if args.solvent == "vacuum" else "implicit",
                                         output=args.output, reporters=[hb.ProgressReporter(), memory],
                                         minimize=not args.no_minimize)
        total = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{n_beads} beads -> {result.topology.getNumAtoms()} atoms in {total:.0f} s, peak RSS {rss:.0f} MB")
    for row in memory.rows:
        print(f"  {row['stage']:<12} {row['seconds']:>8.1f} s  peak RSS {row['peak_rss_mb']:>6} MB")
    write_result(args.out, tiles=list(args.tiles), solvent=args.solvent, threads=threads, n_beads=n_beads,
                 minimize=not args.no_minimize,
                 n_atoms=result.topology.getNumAtoms(), seconds=round(total, 1), peak_rss_mb=round(rss),
                 stages=memory.rows, energies_kj_mol=result.energies,
                 report={k: v for k, v in result.report.items() if k not in ("timings_s", "energies_kj_mol")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

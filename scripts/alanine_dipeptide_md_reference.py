"""The plain all-atom MD reference of alanine dipeptide's phi/psi populations for the resolution
exchange test (tests/test_exchange.py::test_the_all_atom_replica_has_plain_md_phi_psi_populations).

    OMP_NUM_THREADS=1 python scripts/alanine_dipeptide_md_reference.py [--ns 40] [--seed 1] \
        [--out tests/data/exchange/alanine_dipeptide_md_phipsi.json] [--raw angles.npy]

The System and settings of benchmarks/resolution_exchange.py (ACE-ALA-NME, Amber14 + OBC2, 1 nm
non-periodic cut-off, HBonds, OpenMM's LangevinMiddleIntegrator 2 fs, 1/ps, 300 K, Reference
platform), 10 ps of equilibration from the PDB, then phi/psi every 0.5 ps.  Written: the counts of
a 12 x 12 grid of 30-degree phi/psi cells (phi rows, psi columns, from -180 degrees) in each of
``--blocks`` consecutive blocks of equal length, so the test can form any union of cells and its
block standard error.  40 ns take about 15 min on one core.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import openmm as mm
from openmm import unit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import resolution_exchange as bench

CELL = 30  # degrees


def cells(angles: np.ndarray) -> np.ndarray:
    """(frames,) flat cell index of (phi, psi) in degrees: 12 * phi bin + psi bin."""
    bins = np.floor((np.asarray(angles) + 180.0) / CELL).astype(int) % (360 // CELL)
    return bins[:, 0] * (360 // CELL) + bins[:, 1]


def block_counts(angles: np.ndarray, blocks: int) -> np.ndarray:
    """(blocks, 144) cell counts of consecutive equal blocks (a remainder at the end is dropped)."""
    index = cells(angles)
    n = len(index) // blocks * blocks
    return np.array([np.bincount(b, minlength=(360 // CELL) ** 2) for b in index[:n].reshape(blocks, -1)])


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ns", type=float, default=40.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=40)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "tests" / "data" / "exchange" / "alanine_dipeptide_md_phipsi.json")
    parser.add_argument("--raw", type=Path, default=None, help="also save the (frames, 2) angles (.npy)")
    args = parser.parse_args(argv)
    pdb, system = bench.setup()
    integrator = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picosecond)
    integrator.setRandomNumberSeed(args.seed)
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("Reference"))
    context.setPositions(pdb.positions)
    context.applyConstraints(1e-6)
    context.setVelocitiesToTemperature(300 * unit.kelvin, args.seed)
    integrator.step(5000)  # 10 ps
    frames, t0 = [], time.process_time()
    for i in range(round(args.ns * 1000 / (bench.STEPS * 0.002))):
        integrator.step(bench.STEPS)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        if (i + 1) % 2000 == 0:
            print(f"{(i + 1) * bench.STEPS * 0.002 / 1000:.0f} ns, {time.process_time() - t0:.0f} s", file=sys.stderr,
                  flush=True)
    angles = bench.phi_psi(pdb.topology, np.array(frames))
    if args.raw:
        np.save(args.raw, angles.astype(np.float32))
    counts = block_counts(angles, args.blocks)
    record = {"command": " ".join(["python", *sys.argv]) if argv is None else " ".join(argv),
              "date": time.strftime("%Y-%m-%d"), "ns": args.ns, "seed": args.seed,
              "sample_interval_ps": bench.STEPS * 0.002, "frames": int(counts.sum()), "cell_degrees": CELL,
              "layout": "counts[block][12 * phi_bin + psi_bin], bins from -180 degrees",
              "cpu_s": time.process_time() - t0, "counts": counts.tolist()}
    args.out.write_text(json.dumps(record, separators=(",", ":")) + "\n")
    return record


if __name__ == "__main__":
    main()

"""Serial resolution switching: Martini 3 MD -> HEroBM all-atom MD -> Martini 3 MD again.

    python examples/resolution_cycle.py [--cg-steps 500] [--aa-steps 500] [--cycles 1]

The system is martinize2's bm5_2X9A_l_b_B (61 residues, a test fixture) in Martini 3 *without
solvent* (reaction field, eps_r 15, 1.1 nm cut-off; fine for a short demonstration, not a
production model of a protein in water) and, on the all-atom side, Amber14 + OBC2 implicit
solvent, HBonds constraints, 2 fs.  Each cycle prints the bead RMS between the CG frame and the
forward-mapped all-atom frame, the geometry checks and the energies.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import openmm as mm
from openmm import app, unit

import openmm_herobm as hb
from openmm_herobm.exchange import cg_positions, to_all_atom, to_coarse_grained
from openmm_herobm.martini import MartiniTopFile

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
TOP = DATA / "exchange" / "protein_vacuum.top"
START = DATA / "real_frames" / "test" / "bm5_2X9A_l_b_B" / "plain" / "md.gro"


def cg_simulation(top: MartiniTopFile, positions, temperature: float = 300.0,
                  threads: int | None = None) -> app.Simulation:
    """Martini 3 in vacuum, 20 fs Langevin steps, minimised from ``positions``.  ``threads``: OpenMM
    CPU threads (default: the platform's); with one, the trajectory is the same run after run (with
    two, the Martini forces' sums differ in order and the frames drift apart within 100 steps)."""
    integrator = mm.LangevinMiddleIntegrator(temperature * unit.kelvin, 5 / unit.picosecond, 0.02 * unit.picosecond)
    integrator.setRandomNumberSeed(1)
    properties = {} if threads is None else {"Threads": str(threads)}
    simulation = app.Simulation(top.topology, top.createSystem(), integrator, mm.Platform.getPlatformByName("CPU"),
                                properties)
    simulation.context.setPositions(positions)
    simulation.context.computeVirtualSites()
    simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, 1)
    return simulation


def mapped_beads(aa: app.Simulation, top: MartiniTopFile) -> np.ndarray:
    """The all-atom frame forward-mapped and put in the Martini topology's bead order (nm)."""
    return cg_positions(to_coarse_grained(aa, top, minimize=False, platform="CPU"))


def energy(simulation: app.Simulation) -> float:
    return simulation.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def cycle(cg: app.Simulation, top: MartiniTopFile, cg_steps: int, aa_steps: int) -> tuple[app.Simulation, dict]:
    """One CG -> AA -> CG round; returns the new CG Simulation and what was measured."""
    out, t0 = {}, time.perf_counter()
    cg.step(cg_steps)
    out["cg_md_s"] = time.perf_counter() - t0
    beads = cg_positions(cg)
    t0 = time.perf_counter()
    aa = to_all_atom(cg, platform="CPU")
    out["to_all_atom_s"] = time.perf_counter() - t0
    out["bead_rms_after_backmapping_nm"] = hb_rms(beads, mapped_beads(aa, top))
    out["checks"] = {k: v for k, v in aa.herobm_report.items() if k.startswith(("chirality_errors_", "cis_peptides_"))}
    out["aa_energy_start"] = energy(aa)
    t0 = time.perf_counter()
    aa.step(aa_steps)
    out["aa_md_s"] = time.perf_counter() - t0
    out["aa_energy_end"] = energy(aa)
    t0 = time.perf_counter()
    cg = to_coarse_grained(aa, top, platform="CPU")
    out["to_coarse_grained_s"] = time.perf_counter() - t0
    out["cg_energy_back"] = energy(cg)
    return cg, out


def hb_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(((a - b) ** 2).sum(-1).mean()))


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cg-steps", type=int, default=500, help="20 fs Martini steps per cycle (default 500: 10 ps)")
    parser.add_argument("--aa-steps", type=int, default=500, help="2 fs all-atom steps per cycle (default 500: 1 ps)")
    parser.add_argument("--cycles", type=int, default=1)
    args = parser.parse_args(argv)
    hb.set_threads(2)
    top = MartiniTopFile(TOP)
    cg = cg_simulation(top, app.GromacsGroFile(str(START)).getPositions())
    results = []
    for k in range(args.cycles):
        cg, out = cycle(cg, top, args.cg_steps, args.aa_steps)
        results.append(out)
        print(f"cycle {k + 1}: " + ", ".join(f"{key} {value:.3f}" if isinstance(value, float) else f"{key} {value}"
                                            for key, value in out.items()))
    t0 = time.perf_counter()
    cg.step(args.cg_steps)
    print(f"back in Martini: {args.cg_steps} steps in {time.perf_counter() - t0:.2f} s, energy {energy(cg):.1f} kJ/mol")
    return {"cycles": results, "final_cg_energy": energy(cg)}


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Cholesterol conformations for training the lipid model (CHARMM36 in OpenMM, no test data used).

The only all-atom cholesterols in ``../shared/data/lipids`` are the 24 of the bilayer we hold
out for testing, so training conformations are generated: Langevin MD of one cholesterol
(CHARMM36 ``charmm36.xml``, residue CHL1, vacuum, HBonds constraints, 2 fs) started from
CG2AT2's CHOL fragment (template geometry with correct stereochemistry, checked with
``herobm evaluate``), ``--replicas`` independent runs with different seeds, one frame every
``--every-ps`` after ``--equilibrate-ps``.  Ring stereochemistry cannot change in MD; what
varies is ring puckering, the hydroxyl and the iso-octyl tail.

    python scripts/generate_cholesterol_conformers.py -o /work/data/chol_conformers.pdb
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mdtraj
import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

FRAGMENT = (Path(__file__).resolve().parents[2] / "shared" / "data" / "reference_mappings"
            / "cg2at_martini3_charmm36" / "CHOL.fragment.pdb")


def cholesterol_topology(path: Path) -> tuple[app.Topology, np.ndarray]:
    """CHL1 topology (CHARMM36 template bonds) and positions (nm) from the fragment file."""
    forcefield = app.ForceField("charmm36.xml")
    template = forcefield._templates["CHL1"]
    rows = [line for line in path.read_text().splitlines() if line.startswith(("ATOM", "HETATM"))]
    xyz = {line[12:16].strip(): [float(line[30:38]), float(line[38:46]), float(line[46:54])] for line in rows}
    top = app.Topology()
    residue = top.addResidue("CHL1", top.addChain())
    atoms = [top.addAtom(a.name, a.element, residue) for a in template.atoms]
    for i, j in template.bonds:
        top.addBond(atoms[i], atoms[j])
    missing = [a.name for a in template.atoms if a.name not in xyz]
    if missing:
        raise SystemExit(f"{path}: atoms {missing} missing from the cholesterol fragment")
    return top, np.array([xyz[a.name] for a in template.atoms]) / 10.0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-o", "--output", required=True, help="multi-model PDB of the conformations (residue CHL)")
    ap.add_argument("--fragment", default=str(FRAGMENT))
    ap.add_argument("--replicas", type=int, default=8)
    ap.add_argument("--frames", type=int, default=60, help="frames per replica")
    ap.add_argument("--every-ps", type=float, default=2.0)
    ap.add_argument("--equilibrate-ps", type=float, default=20.0)
    ap.add_argument("--temperature", type=float, default=310.0, help="K")
    args = ap.parse_args(argv)

    top, pos = cholesterol_topology(Path(args.fragment))
    residue = next(top.residues())
    system = app.ForceField("charmm36.xml").createSystem(top, nonbondedMethod=app.NoCutoff, constraints=app.HBonds,
                                                         residueTemplates={residue: "CHL1"})
    frames = []
    t0 = time.perf_counter()
    for seed in range(args.replicas):
        integrator = mm.LangevinMiddleIntegrator(args.temperature * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picosecond)
        integrator.setRandomNumberSeed(seed + 1)
        context = mm.Context(system, integrator, mm.Platform.getPlatformByName("CPU"))
        context.setPositions(pos)
        mm.LocalEnergyMinimizer.minimize(context, 10.0)
        context.setVelocitiesToTemperature(args.temperature * unit.kelvin, seed + 1)
        integrator.step(int(args.equilibrate_ps / 0.002))
        for _ in range(args.frames):
            integrator.step(int(args.every_ps / 0.002))
            frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    traj = mdtraj.Trajectory(np.array(frames, np.float32), mdtraj.Topology.from_openmm(top))
    for residue in traj.topology.residues:
        residue.name = "CHL"  # the name the CHARMM36 bilayers (and the mapping) use
    traj.save_pdb(args.output)
    print(f"{len(frames)} conformations ({args.replicas} replicas x {args.frames}, {args.every_ps} ps apart, "
          f"{args.temperature} K) -> {args.output} in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

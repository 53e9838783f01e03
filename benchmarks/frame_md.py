#!/usr/bin/env python
"""Does a refined whole frame run?  Unrestrained MD of a ``herobm backmap`` output (issue 15, item 5).

Input: the structure ``OUT.pdb`` and the ``OUT.system.xml`` / ``OUT.state.xml`` that ``herobm backmap
... -o OUT.pdb`` writes (the System without the bead restraint, periodic box kept).  Bonds to
hydrogen become constraints (their HarmonicBondForce lengths), velocities are drawn at ``--kelvin``
(seeded), then ``--ps`` of LangevinMiddleIntegrator MD (1/ps, ``--fs`` step) on the CPU platform
with ``--threads`` threads.  Reported every ``--report-ps``: potential energy, temperature, largest
displacement of any atom from the start (minimum image); at the end: ``stable`` = all finite, the
mean temperature of the second half within 30 K of the bath and never above bath + 100 K.  Wall
time of the MD alone.

    python benchmarks/frame_md.py /tmp/mem/mem.pdb --ps 10 --threads 2 --out benchmarks/results/frame_md.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as u


def hbond_constraints(system: openmm.System, topology: app.Topology) -> int:
    """Bonds to hydrogen (topology bonds: CHARMM's Urey-Bradley 1-3 terms share the
    HarmonicBondForce) as constraints at their HarmonicBondForce lengths; returns how many."""
    hydrogen = np.array([a.element is not None and a.element.symbol == "H" for a in topology.atoms()])
    bonded = {tuple(sorted((a.index, b.index))) for a, b in topology.bonds()}
    have = {tuple(sorted(system.getConstraintParameters(k)[:2])) for k in range(system.getNumConstraints())}
    n = 0
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, r0, _ = force.getBondParameters(k)
                pair = tuple(sorted((i, j)))
                if (hydrogen[i] or hydrogen[j]) and pair in bonded and pair not in have:
                    system.addConstraint(i, j, r0)
                    have.add(pair)
                    n += 1
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("structure", help="OUT.pdb of herobm backmap (OUT.system.xml, OUT.state.xml beside it)")
    ap.add_argument("--ps", type=float, default=10.0)
    ap.add_argument("--fs", type=float, default=2.0)
    ap.add_argument("--kelvin", type=float, default=310.0)
    ap.add_argument("--report-ps", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    base = Path(args.structure)
    stem = base.with_suffix("")
    pdb = app.PDBFile(str(base))
    system = openmm.XmlSerializer.deserialize(Path(f"{stem}.system.xml").read_text())
    state = openmm.XmlSerializer.deserialize(Path(f"{stem}.state.xml").read_text())
    added = hbond_constraints(system, pdb.topology)
    integrator = openmm.LangevinMiddleIntegrator(args.kelvin * u.kelvin, 1.0 / u.picosecond, args.fs * u.femtosecond)
    integrator.setRandomNumberSeed(args.seed)
    platform = openmm.Platform.getPlatformByName("CPU")
    context = openmm.Context(system, integrator, platform, {"Threads": str(args.threads)})
    context.setPeriodicBoxVectors(*state.getPeriodicBoxVectors())
    context.setPositions(state.getPositions())
    context.applyConstraints(1e-6)
    context.setVelocitiesToTemperature(args.kelvin * u.kelvin, args.seed)
    start = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(u.nanometer)
    box = np.diag(np.array(state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(u.nanometer)))
    dof = 3 * system.getNumParticles() - system.getNumConstraints() - 3
    steps = int(round(args.report_ps * 1000.0 / args.fs))
    rows, t0 = [], time.perf_counter()
    for k in range(int(round(args.ps / args.report_ps))):
        integrator.step(steps)
        s = context.getState(getEnergy=True, getPositions=True)
        x = s.getPositions(asNumpy=True).value_in_unit(u.nanometer)
        d = x - start
        d -= box * np.round(d / box)
        kinetic = s.getKineticEnergy().value_in_unit(u.kilojoule_per_mole)
        row = {"ps": (k + 1) * args.report_ps, "potential_kj": s.getPotentialEnergy().value_in_unit(u.kilojoule_per_mole),
               "kelvin": 2 * kinetic / (dof * 0.00831446261815324), "max_displacement_nm": float(np.linalg.norm(d, axis=1).max()),
               "wall_s": time.perf_counter() - t0}
        rows.append(row)
        print(f"{row['ps']:6.1f} ps  E {row['potential_kj']:14.1f} kJ/mol  T {row['kelvin']:6.1f} K  "
              f"max displacement {row['max_displacement_nm']:.2f} nm  {row['wall_s']:.0f} s", flush=True)
    temps = np.array([r["kelvin"] for r in rows])
    finite = all(np.isfinite([r["potential_kj"], r["kelvin"]]).all() for r in rows)
    stable = bool(finite and abs(temps[len(temps) // 2:].mean() - args.kelvin) < 30 and temps.max() < args.kelvin + 100)
    report = {"structure": str(base), "atoms": system.getNumParticles(), "hbond_constraints_added": added,
              "ps": args.ps, "fs": args.fs, "threads": args.threads, "md_wall_s": time.perf_counter() - t0,
              "stable": stable, "frames": rows}
    print(f"stable: {stable}; {system.getNumParticles()} atoms, {args.ps} ps in {report['md_wall_s']:.0f} s")
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))
    return 0 if stable else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""From a Martini 3 frame to a solvated, equilibrated all-atom system ready for production MD.

    python examples/prepare_production.py [CG.pdb] [OUTDIR]

Backmaps, optimises the backbone, protonates at pH 7, solvates in TIP3P-FB with 0.15 M
neutralising Na+/Cl- ions (1 nm padding), minimises with the bead restraint, heats to 300 K
with the restraint on and releases it (20 ps), then writes the System and State XML that
`production_md()` below continues from.
"""

import sys
from pathlib import Path

import openmm as mm
import openmm.app as app
import openmm.unit as unit

import openmm_herobm as hb

here = Path(__file__).resolve().parent
cg = sys.argv[1] if len(sys.argv) > 1 else here / "data" / "1ubq_martinize2_cg.pdb"
outdir = Path(sys.argv[2] if len(sys.argv) > 2 else "production")
outdir.mkdir(exist_ok=True)

result = hb.backmap_and_simulate(cg, solvent="explicit", equilibrate=20.0, temperature=300.0,
                                 output=outdir / "system.pdb")
print("energies (kJ/mol):", {k: round(v) for k, v in result.energies.items()})
print("stage timings (s):", {k: round(v, 1) for k, v in result.timings.items()})


def production_md(outdir: Path, picoseconds: float = 10.0) -> None:
    """Continue from the written System/State: NPT at 300 K and 1 bar, 2 fs, HBonds constraints."""
    system = mm.XmlSerializer.deserialize((outdir / "system.system.xml").read_text())
    state = mm.XmlSerializer.deserialize((outdir / "system.state.xml").read_text())
    system.addForce(mm.MonteCarloBarostat(1 * unit.bar, 300 * unit.kelvin))
    integrator = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picoseconds)
    pdb = app.PDBFile(str(outdir / "system.pdb"))
    simulation = app.Simulation(pdb.topology, system, integrator)
    simulation.context.setState(state)
    simulation.reporters.append(app.DCDReporter(str(outdir / "production.dcd"), 500))
    simulation.step(int(picoseconds / 0.002))
    print("production energy:", simulation.context.getState(getEnergy=True).getPotentialEnergy())


production_md(outdir, picoseconds=2.0)

"""Force field, System and Simulation: the solvent model's files, templates by name, the OBC2 swap."""

from __future__ import annotations

from pathlib import Path

import openmm as mm
import openmm.app as app
import openmm.unit as unit

from ..chemistry import PROTEIN_RESIDUES
from ..errors import HeroBMError

#: random seed of the Langevin integrator and the initial velocities: the same input, options and
#: platform give the same output (OpenMM's seed 0 would mean a new seed every run)
SEED = 20241205

#: force-field files per solvent model
IMPLICIT = "implicit/obc2.xml"
EXPLICIT_WATER = "amber14/tip3pfb.xml"
CHARMM_WATER = "charmm36/water.xml"  # CHARMM TIP3P and ions
#: CHARMM36 templates of lipids that charmm36.xml lacks or names with more than 4 characters
#: (PAPC, PAPS, DLIP, SAP6; provenance in the file), loaded with every charmm36.xml
EXTRA_LIPIDS = Path(__file__).resolve().parent / "charmm36_lipids_extra.xml"
CHARMM36_FILES = ("charmm36.xml",)
CUTOFF_NM = 1.0  # nonbonded cutoff of every System (a periodic box must be at least twice as wide)


def load_forcefield(forcefield: str | list[str] | app.ForceField, solvent: str | None) -> app.ForceField:
    """The ForceField of these XML files plus the solvent model's (``implicit/obc2.xml``, or the
    water and ions matching the force field); a ForceField object is used as given (it must hold
    the solvent model asked for)."""
    if isinstance(forcefield, app.ForceField):
        return forcefield
    files = [forcefield] if isinstance(forcefield, str) else list(forcefield)
    if any(Path(f).name in CHARMM36_FILES for f in files) and str(EXTRA_LIPIDS) not in files:
        files.append(str(EXTRA_LIPIDS))
    if solvent == "implicit":
        files.append(IMPLICIT)
    elif solvent == "explicit":
        files.append(CHARMM_WATER if any("charmm" in f.lower() for f in files) else EXPLICIT_WATER)
    elif solvent not in (None, "vacuum"):
        raise HeroBMError(f"solvent must be None, 'implicit' or 'explicit', not {solvent!r}")
    try:
        return app.ForceField(*files)
    except ValueError as exc:
        raise HeroBMError(f"cannot load force field {files}: {exc}; give an OpenMM or openmmforcefields XML "
                          "name such as amber14-all.xml") from None


def named_templates(forcefield: app.ForceField, topology: app.Topology) -> dict:
    """{residue: its name} for non-protein residues named like a template of ``forcefield``.

    CHARMM36 has two cholesterol templates with the same atoms (CHL1, CLOL): the name decides.
    """
    return {r: r.name for r in topology.residues() if r.name not in PROTEIN_RESIDUES and r.name in forcefield._templates}


def build_simulation(topology, positions, forcefield: app.ForceField, solvent: str | None, platform: mm.Platform,
                     extra_forces=(), constraints=None, temperature=300.0,
                     rigid_water: bool | None = None, periodic: bool = False) -> tuple[mm.System, app.Simulation]:
    """System + Simulation (Langevin, 2 fs) at ``positions``; ``rigid_water=False`` for minimisation
    (rigid water is constraints, which slow OpenMM's L-BFGS ~100x); ``periodic`` without explicit
    solvent: a 1 nm cutoff in the topology's box (the CG input's unit cell: molecules meet the
    periodic images of others, as they did in the CG simulation)."""
    if solvent == "explicit":
        method = app.PME
    else:
        method = app.CutoffPeriodic if periodic else app.CutoffNonPeriodic
    try:
        system = forcefield.createSystem(topology, nonbondedMethod=method, nonbondedCutoff=CUTOFF_NM * unit.nanometer,
                                         constraints=constraints, rigidWater=rigid_water,
                                         residueTemplates=named_templates(forcefield, topology))
    except ValueError as exc:  # e.g. no template for a residue
        raise HeroBMError(f"the force field cannot parameterise the backmapped structure: {str(exc).split('  For more')[0]} "
                          "(use --no-minimize for the model's heavy atoms, or another --forcefield)") from None
    if solvent == "implicit":
        native_obc2(system, topology)
    for force in extra_forces:
        system.addForce(force)
    integrator = mm.LangevinMiddleIntegrator(temperature * unit.kelvin, 1.0 / unit.picosecond,
                                             0.002 * unit.picoseconds)
    integrator.setRandomNumberSeed(SEED)  # OpenMM's default (0) draws a new seed every run
    simulation = app.Simulation(topology, system, integrator, platform)
    simulation.context.setPositions(positions)
    return system, simulation


def native_obc2(system: mm.System, topology: app.Topology) -> None:
    """Swap ``implicit/obc2.xml``'s CustomGBForce for OpenMM's native ``GBSAOBCForce`` (same OBC2 model).

    Same energy to 1e-3 kJ/mol with the same radii and scale factors, but 4-6x cheaper on the
    CPU platform, where the custom force is most of the cost of minimisation and implicit MD.
    """
    from openmm.app.internal.customgbforces import GBSAOBC2Force

    custom = [i for i, f in enumerate(system.getForces()) if isinstance(f, mm.CustomGBForce)]
    nonbonded = [f for f in system.getForces() if isinstance(f, mm.NonbondedForce)]
    if len(custom) != 1 or len(nonbonded) != 1:
        return  # not the plain obc2.xml layout: keep what the force field built
    old = system.getForce(custom[0])
    native = mm.GBSAOBCForce()
    native.setSoluteDielectric(1.0)
    native.setSolventDielectric(78.5)
    if nonbonded[0].getNonbondedMethod() == mm.NonbondedForce.NoCutoff:
        native.setNonbondedMethod(mm.GBSAOBCForce.NoCutoff)
    else:
        periodic = nonbonded[0].getNonbondedMethod() == mm.NonbondedForce.CutoffPeriodic
        native.setNonbondedMethod(mm.GBSAOBCForce.CutoffPeriodic if periodic else mm.GBSAOBCForce.CutoffNonPeriodic)
        native.setCutoffDistance(nonbonded[0].getCutoffDistance())
    for i, (radius, scale) in enumerate(GBSAOBC2Force.getStandardParameters(topology)):
        native.addParticle(nonbonded[0].getParticleParameters(i)[0], radius, scale)
    native.setForceGroup(old.getForceGroup())
    system.removeForce(custom[0])
    system.addForce(native)

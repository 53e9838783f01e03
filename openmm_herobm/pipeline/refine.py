"""Hydrogens, force field, minimisation and equilibration in OpenMM.

Minimisation runs *without* constraints (OpenMM's L-BFGS is ~100x slower with them on the
CPU platform); constraints are added only for dynamics.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

from ..errors import HeroBMError

KJ_NM = unit.kilojoule_per_mole / unit.nanometer

#: force-field files per solvent model
IMPLICIT = "implicit/obc2.xml"
EXPLICIT_WATER = "amber14/tip3pfb.xml"


def choose_platform(name: str | None = None) -> mm.Platform:
    """The named platform, else the fastest available one (CUDA, OpenCL, CPU, Reference)."""
    available = [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]
    if name:
        if name not in available:
            raise HeroBMError(f"OpenMM platform {name!r} is not available here (available: {', '.join(available)})")
        return mm.Platform.getPlatformByName(name)
    for candidate in ("CUDA", "HIP", "OpenCL", "CPU", "Reference"):
        if candidate in available:
            return mm.Platform.getPlatformByName(candidate)
    raise HeroBMError("no OpenMM platform is available")


def load_forcefield(forcefield: str | list[str], solvent: str | None) -> app.ForceField:
    files = [forcefield] if isinstance(forcefield, str) else list(forcefield)
    if solvent == "implicit":
        files.append(IMPLICIT)
    elif solvent == "explicit":
        files.append(EXPLICIT_WATER)
    elif solvent not in (None, "vacuum"):
        raise HeroBMError(f"solvent must be None, 'implicit' or 'explicit', not {solvent!r}")
    try:
        return app.ForceField(*files)
    except ValueError as exc:
        raise HeroBMError(f"cannot load force field {files}: {exc}; give an OpenMM or openmmforcefields XML "
                          "name such as amber14-all.xml") from None


def add_terminal_oxygens(topology: app.Topology, positions_nm: np.ndarray) -> tuple[app.Topology, np.ndarray]:
    """Add the OXT of every chain's last amino acid (a CG bead cannot say where a chain ends).

    OXT is O mirrored through the CA->C axis: the two carboxylate oxygens are symmetric.
    """
    new = app.Topology()
    new.setPeriodicBoxVectors(topology.getPeriodicBoxVectors())
    xyz, mapping = [], {}
    for chain in topology.chains():
        new_chain = new.addChain(chain.id)
        residues = list(chain.residues())
        for k, residue in enumerate(residues):
            new_res = new.addResidue(residue.name, new_chain, residue.id, residue.insertionCode)
            names = {}
            for atom in residue.atoms():
                mapping[atom] = new.addAtom(atom.name, atom.element, new_res)
                names[atom.name] = atom.index
                xyz.append(positions_nm[atom.index])
            last = k == len(residues) - 1
            if last and "OXT" not in names and all(n in names for n in ("CA", "C", "O")):
                c, ca, o = (positions_nm[names[n]] for n in ("C", "CA", "O"))
                axis = (c - ca) / np.linalg.norm(c - ca)
                v = o - c
                oxt = new.addAtom("OXT", app.element.oxygen, new_res)
                xyz.append(c + 2 * np.dot(v, axis) * axis - v)
                c_atom = next(a for a in residue.atoms() if a.name == "C")
                mapping[("OXT", c_atom)] = oxt
    for a, b in topology.bonds():
        new.addBond(mapping[a], mapping[b])
    for key, oxt in mapping.items():
        if isinstance(key, tuple):
            new.addBond(mapping[key[1]], oxt)
    return new, np.array(xyz)


def add_hydrogens(modeller: app.Modeller, forcefield: app.ForceField, ph: float, variants: list,
                  platform: mm.Platform | None = None) -> None:
    """Terminal OXT and hydrogens at ``ph`` (protonation variants given in the input are kept)."""
    positions = np.asarray(modeller.positions.value_in_unit(unit.nanometer))
    topology, positions = add_terminal_oxygens(modeller.topology, positions)
    modeller.topology, modeller.positions = topology, unit.Quantity(positions, unit.nanometer)
    # amber14 has no terminal templates for neutral ASP/GLU/LYS: termini take their pH state
    variants = list(variants)
    for chain in topology.chains():
        residues = list(chain.residues())
        for end in {residues[0].index, residues[-1].index}:
            if variants[end] in ("ASH", "GLH", "LYN"):
                variants[end] = None
    # the platform matters: addHydrogens minimises the new hydrogens (Reference is slow)
    modeller.addHydrogens(forcefield, pH=ph, variants=variants, platform=platform)


@dataclass
class Refinement:
    topology: app.Topology
    positions: unit.Quantity
    system: mm.System
    simulation: app.Simulation
    energies: dict = field(default_factory=dict)  # kJ/mol at each stage
    timings: dict = field(default_factory=dict)  # seconds per stage


def build_simulation(topology, positions, forcefield: app.ForceField, solvent: str | None, platform: mm.Platform,
                     extra_forces=(), constraints=None, temperature=300.0) -> tuple[mm.System, app.Simulation]:
    method = app.PME if solvent == "explicit" else app.CutoffNonPeriodic
    try:
        system = forcefield.createSystem(topology, nonbondedMethod=method, nonbondedCutoff=1.0 * unit.nanometer,
                                         constraints=constraints)
    except ValueError as exc:  # e.g. no template for a residue
        raise HeroBMError(f"the force field cannot parameterise the backmapped structure: {str(exc).split('  For more')[0]} "
                          "(use --no-minimize for the model's heavy atoms, or another --forcefield)") from None
    if solvent == "implicit":
        native_obc2(system, topology)
    for force in extra_forces:
        system.addForce(force)
    integrator = mm.LangevinMiddleIntegrator(temperature * unit.kelvin, 1.0 / unit.picosecond,
                                             0.002 * unit.picoseconds)
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
        native.setNonbondedMethod(mm.GBSAOBCForce.CutoffNonPeriodic)
        native.setCutoffDistance(nonbonded[0].getCutoffDistance())
    for i, (radius, scale) in enumerate(GBSAOBC2Force.getStandardParameters(topology)):
        native.addParticle(nonbonded[0].getParticleParameters(i)[0], radius, scale)
    native.setForceGroup(old.getForceGroup())
    system.removeForce(custom[0])
    system.addForce(native)


def potential(simulation: app.Simulation) -> float:
    return simulation.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def minimize(simulation: app.Simulation, tolerance: float = 500.0, max_iterations: int = 0) -> None:
    simulation.minimizeEnergy(tolerance=tolerance * KJ_NM, maxIterations=max_iterations)
    state = simulation.context.getState(getPositions=True)
    if not np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).all():
        raise HeroBMError("minimisation produced non-finite positions; the backmapped structure has overlapping "
                          "atoms that the force field cannot resolve (try --restraint-k 0 or check the CG input)")


def equilibrate(simulation: app.Simulation, picoseconds: float, temperature: float, restraint_parameter: str | None,
                stages: int = 5) -> None:
    """NVT heating in ``stages`` steps from 50 K to ``temperature`` with the restraint on, then release it."""
    steps_total = int(round(picoseconds / 0.002))
    heat = steps_total // 2
    integrator = simulation.integrator
    simulation.context.setVelocitiesToTemperature(50 * unit.kelvin)
    for k in range(stages):
        integrator.setTemperature((50 + (temperature - 50) * (k + 1) / stages) * unit.kelvin)
        simulation.step(max(heat // stages, 1))
    if restraint_parameter is not None:
        simulation.context.setParameter(restraint_parameter, 0.0)
    simulation.step(max(steps_total - heat, 1))


def timed(timings: dict, key: str):
    class _Timer:
        def __enter__(self):
            self.t = time.perf_counter()

        def __exit__(self, *exc):
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - self.t
    return _Timer()

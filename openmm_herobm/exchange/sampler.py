"""Hamiltonian resolution exchange (smart-resolution replica exchange, Liu & Voth, JCP 126, 045106
(2007)), all replicas in all-atom coordinates x (derivation: docs/resolution-exchange.md).

State k has the potential

    U_k(x) = a_k U_bonded(x) + b_k U_rest(x) + c_k U_CG(M x)

U_bonded: the all-atom bonds and angles (force group 0), U_rest: every other all-atom term
(torsions, nonbonded, implicit solvent; group 1), U_CG(M x): the Martini 3 energy of the beads
M x (M: the mapping's weights, beads x atoms), built in the same System as
``CustomCentroidBondForce`` s of atom groups (group 2).  Resolution states are (1, l, 1 - l),
temperature-like states (T0/T, T0/T, 0).  One ``CustomIntegrator`` per replica integrates
f = a f0 + b f1 + c f2 (Langevin middle scheme, constraints); neighbours swap states with the
Metropolis rule of Hamiltonian replica exchange, which leaves the product of the states'
Boltzmann distributions invariant: the state (1, 1, 0) samples the all-atom one exactly.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import mdtraj
import numpy as np
import openmm as mm
from openmm import app, unit

from ..errors import HeroBMError
from ..mapping import map_structure
from ..martini import MartiniTopFile
from ..pipeline import build_simulation, choose_platform, load_forcefield
from ..units import KELVIN, PICOSECOND, value_in
from .switching import _bead_order

BONDED, REST, CG = 0, 1, 2  # force groups
CG_GROUP = CG
CONSTRAINT_K = 1.0e6  # kJ/mol/nm^2: a Martini constraint as a bond on mapped beads (FLEXIBLE's value)
BONDED_FORCES = (mm.HarmonicBondForce, mm.HarmonicAngleForce, mm.CMMotionRemover)
KB = unit.MOLAR_GAS_CONSTANT_R.value_in_unit(unit.kilojoule_per_mole / unit.kelvin)


def resolution_states(lambdas) -> np.ndarray:
    """(K, 3) coefficients (a, b, c) of resolution states: (1, l, 1 - l) for each l in ``lambdas``."""
    lam = np.asarray(lambdas, dtype=float)
    if lam.ndim != 1 or len(lam) < 2 or lam.min() < 0 or lam.max() > 1:
        raise HeroBMError("lambdas: give at least two values between 0 and 1 (1 = all-atom)")
    return np.stack([np.ones_like(lam), lam, 1 - lam], axis=1)


def temperature_states(temperatures, temperature=300.0) -> np.ndarray:
    """(K, 3) coefficients of temperature replica exchange run at ``temperature``: the all-atom
    potential scaled by T0/T_k samples exp(-U/kT_k) in configuration space."""
    t0 = value_in(temperature, KELVIN, "temperature")
    s = t0 / np.array([value_in(t, KELVIN, "temperatures") for t in temperatures])
    return np.stack([s, s, np.zeros_like(s)], axis=1)


def _centroid(expression: str, variable: str, geometry: str, groups: int, cutoff: float | None = None):
    first, *rest = expression.split(";")
    if cutoff is not None:
        first = f"step({cutoff!r} - r)*({first})"
    return mm.CustomCentroidBondForce(groups, ";".join([first, *rest, f" {variable}={geometry}"]))


def _copy_globals_and_functions(source, target) -> None:
    for i in range(source.getNumGlobalParameters()):
        target.addGlobalParameter(source.getGlobalParameterName(i), source.getGlobalParameterDefaultValue(i))
    for i in range(getattr(source, "getNumTabulatedFunctions", lambda: 0)()):
        copy = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(source.getTabulatedFunction(i)))
        target.addTabulatedFunction(source.getTabulatedFunctionName(i), copy)


def _site_weights(site: mm.VirtualSite) -> tuple[list[int], list[float]] | None:
    """(particles, weights) of a virtual site that is a fixed weighted centre; None otherwise."""
    n = site.getNumParticles()
    particles = [site.getParticle(i) for i in range(n)]
    if isinstance(site, (mm.TwoParticleAverageSite, mm.ThreeParticleAverageSite)):
        return particles, [site.getWeight(i) for i in range(n)]
    if isinstance(site, mm.LocalCoordinatesSite) and not any(site.getLocalPosition().value_in_unit(unit.nanometer)):
        return particles, list(site.getOriginWeights())
    return None


def _virtual_site_groups(cg_system: mm.System, groups: list) -> list:
    """``groups`` with each virtual particle's group replaced by the weighted centre of the
    groups of the particles it is built from (atom weights summed over them)."""
    groups = list(groups)
    for i in range(cg_system.getNumParticles()):
        if not cg_system.isVirtualSite(i):
            continue
        linear = _site_weights(cg_system.getVirtualSite(i))
        if linear is None:
            raise HeroBMError(f"Martini particle {i + 1} is a virtual site that is not a weighted centre "
                              f"({type(cg_system.getVirtualSite(i)).__name__}); the resolution exchange "
                              "supports centres only")
        weight: dict[int, float] = {}
        for particle, w in zip(*linear):
            if cg_system.isVirtualSite(particle):
                raise HeroBMError(f"Martini particle {i + 1}: a virtual site built from another virtual site")
            atoms, atom_weights = groups[particle]
            for a, aw in zip(atoms.tolist(), atom_weights.tolist()):
                weight[a] = weight.get(a, 0.0) + w * aw
        atoms = np.array(sorted(weight), dtype=int)
        groups[i] = (atoms, np.array([weight[a] for a in atoms]))
    return groups


def centroid_forces(cg_system: mm.System, groups: list[tuple[np.ndarray, np.ndarray]]) -> list[mm.Force]:
    """The forces of a Martini ``cg_system`` acting on bead k = the weighted centre of the atoms
    ``groups[k] = (atom indices, weights summing to 1)``: U_CG(M x) as forces on all-atom particles.

    Bonds, angles, torsions (native and custom) and the cut-off pair forces (every non-excluded
    pair within the cut-off, as the CG System has it; non-periodic) are converted; a constant
    (``CustomExternalForce`` without positions, the reaction-field self term) cancels in every swap
    and is left out.  A virtual site that is a weighted centre of beads (martinize2's
    ``virtual_sitesn``, ``virtual_sites2``/``3`` of type 1) is the same weighted centre of their
    atoms: its group composes the two maps, so U_CG sees it where Martini builds it from the
    mapped beads.  Constraints become bonds of ``CONSTRAINT_K`` (Martini's FLEXIBLE side-chain
    value).  A non-linear virtual site is refused.
    """
    groups = _virtual_site_groups(cg_system, groups)
    out = []
    if cg_system.getNumConstraints():
        # constraints martinize2 writes outside #ifdef FLEXIBLE (helical backbone, disulfides):
        # stiff bonds here, as FLEXIBLE makes the others; U_CG only biases the replicas below
        # the all-atom one, so any smooth choice keeps that one exact
        f = _centroid("0.5*k*(r-r0)^2", "r", "distance(g1,g2)", 2, None)
        f.setName("Martini constraints as bonds")
        f.addGlobalParameter("k", CONSTRAINT_K)
        f.addPerBondParameter("r0")
        for k in range(len(groups)):
            f.addGroup(groups[k][0].tolist(), groups[k][1].tolist())
        for i in range(cg_system.getNumConstraints()):
            a, b, r0 = cg_system.getConstraintParameters(i)
            f.addBond([a, b], [r0.value_in_unit(unit.nanometer)])
        out.append(f)

    def new(force, expression, variable, geometry, n, cutoff=None):
        f = _centroid(expression, variable, geometry, n, cutoff)
        f.setName(force.getName())
        for k in range(len(groups)):
            f.addGroup(groups[k][0].tolist(), groups[k][1].tolist())
        return f

    for force in cg_system.getForces():
        if isinstance(force, mm.HarmonicBondForce):
            f = new(force, "0.5*k*(r-r0)^2", "r", "distance(g1,g2)", 2)
            f.addPerBondParameter("r0"), f.addPerBondParameter("k")
            for i in range(force.getNumBonds()):
                a, b, r0, k = force.getBondParameters(i)
                f.addBond([a, b], [r0.value_in_unit(unit.nanometer), k.value_in_unit(unit.kilojoule_per_mole / unit.nanometer**2)])
        elif isinstance(force, mm.HarmonicAngleForce):
            f = new(force, "0.5*k*(theta-theta0)^2", "theta", "angle(g1,g2,g3)", 3)
            f.addPerBondParameter("theta0"), f.addPerBondParameter("k")
            for i in range(force.getNumAngles()):
                a, b, c, t0, k = force.getAngleParameters(i)
                f.addBond([a, b, c], [t0.value_in_unit(unit.radian), k.value_in_unit(unit.kilojoule_per_mole / unit.radian**2)])
        elif isinstance(force, mm.PeriodicTorsionForce):
            f = new(force, "k*(1+cos(n*theta-phase))", "theta", "dihedral(g1,g2,g3,g4)", 4)
            for name in ("n", "phase", "k"):
                f.addPerBondParameter(name)
            for i in range(force.getNumTorsions()):
                a, b, c, d, n, phase, k = force.getTorsionParameters(i)
                f.addBond([a, b, c, d], [n, phase.value_in_unit(unit.radian), k.value_in_unit(unit.kilojoule_per_mole)])
        elif isinstance(force, (mm.CustomBondForce, mm.CustomAngleForce, mm.CustomTorsionForce)):
            n, variable, geometry, get, count = {
                mm.CustomBondForce: (2, "r", "distance(g1,g2)", "getBondParameters", "getNumBonds"),
                mm.CustomAngleForce: (3, "theta", "angle(g1,g2,g3)", "getAngleParameters", "getNumAngles"),
                mm.CustomTorsionForce: (4, "theta", "dihedral(g1,g2,g3,g4)", "getTorsionParameters",
                                        "getNumTorsions")}[type(force)]
            f = new(force, force.getEnergyFunction(), variable, geometry, n)
            _copy_globals_and_functions(force, f)
            for i in range(force.getNumPerBondParameters() if n == 2 else
                           force.getNumPerAngleParameters() if n == 3 else force.getNumPerTorsionParameters()):
                f.addPerBondParameter(force.getPerBondParameterName(i) if n == 2 else
                                      force.getPerAngleParameterName(i) if n == 3 else
                                      force.getPerTorsionParameterName(i))
            for i in range(getattr(force, count)()):
                *atoms, params = getattr(force, get)(i)
                f.addBond(list(atoms), list(params))
        elif isinstance(force, mm.CustomNonbondedForce):
            if force.getUseSwitchingFunction() or force.usesPeriodicBoundaryConditions():
                raise HeroBMError(f"Martini force {force.getName()!r}: switching or a periodic box are not supported "
                                  "by the resolution exchange")
            cutoff = None if force.getNonbondedMethod() == mm.CustomNonbondedForce.NoCutoff \
                else force.getCutoffDistance().value_in_unit(unit.nanometer)
            f = new(force, force.getEnergyFunction(), "r", "distance(g1,g2)", 2, cutoff)
            _copy_globals_and_functions(force, f)
            names = [force.getPerParticleParameterName(i) for i in range(force.getNumPerParticleParameters())]
            for suffix in ("1", "2"):
                for name in names:
                    f.addPerBondParameter(name + suffix)
            excluded = {tuple(sorted(force.getExclusionParticles(i))) for i in range(force.getNumExclusions())}
            params = [force.getParticleParameters(i) for i in range(force.getNumParticles())]
            # interaction groups (the reaction field's charged particles): only their pairs
            sets = [tuple(map(set, force.getInteractionGroupParameters(i))) for i in range(force.getNumInteractionGroups())]
            for a in range(force.getNumParticles()):
                for b in range(a + 1, force.getNumParticles()):
                    if (a, b) in excluded:
                        continue
                    if sets and not any((a in s1 and b in s2) or (a in s2 and b in s1) for s1, s2 in sets):
                        continue
                    f.addBond([a, b], [*params[a], *params[b]])
        elif isinstance(force, mm.CMMotionRemover) or (isinstance(force, mm.CustomExternalForce)
                                                        and force.getEnergyFunction().strip() == "e"):
            continue  # no energy; a constant
        else:
            raise HeroBMError(f"Martini force {force.getName()!r} ({type(force).__name__}) is not supported by the "
                              "resolution exchange")
        out.append(f)
    return out


def all_atom_system(topology: app.Topology, positions, forcefield="amber14-all.xml",
                    solvent: str | None = "implicit") -> mm.System:
    """The all-atom System as :func:`to_all_atom` makes it (the pipeline's production settings:
    HBonds constraints, 1 nm non-periodic cut-off, OpenMM's native OBC2 for ``'implicit'``)."""
    system, _ = build_simulation(topology, positions, load_forcefield(forcefield, solvent), solvent,
                                 mm.Platform.getPlatformByName("Reference"), constraints=app.HBonds)
    return system


def resolution_system(topology: app.Topology, system: mm.System, positions, martini, mapping="martini3") -> mm.System:
    """A copy of the all-atom ``system`` with its forces in groups 0 (bonds, angles) and 1 (the rest)
    and the Martini energy of the mapped beads in group 2 (:func:`centroid_forces`).

    ``martini``: a :class:`~openmm_herobm.martini.MartiniTopFile` (or path) of the same molecule
    in martinize2's bead order, no solvent, no constraints; the bead of each Martini particle is
    found by mapping ``positions`` (nm) with ``mapping`` and matching residues and bead names.
    """
    top = martini if isinstance(martini, MartiniTopFile) else MartiniTopFile(martini, defines={"FLEXIBLE": ""})
    xyz = np.asarray(positions.value_in_unit(unit.nanometer) if unit.is_quantity(positions) else positions)
    mapped = map_structure(mdtraj.Trajectory(xyz[None], mdtraj.Topology.from_openmm(topology)), mapping)
    order = _bead_order(top.topology, mapped.cg.topology)
    weights = mapped.system.weights.tocsr()
    groups = []
    for bead in order:
        row = weights.getrow(bead)
        groups.append((row.indices.astype(int), row.data / row.data.sum()))
    out = mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(system))
    for force in out.getForces():
        force.setForceGroup(BONDED if isinstance(force, BONDED_FORCES) else REST)
    for force in centroid_forces(top.createSystem(), groups):
        force.setForceGroup(CG)
        out.addForce(force)
    return out


def mixed_langevin(temperature: float, friction: float, timestep: float, coefficients) -> mm.CustomIntegrator:
    """Langevin middle integrator (OpenMM's LangevinMiddleIntegrator as a CustomIntegrator) of the
    force a f0 + b f1 + c f2; a, b, c are global variables (set per state)."""
    integrator = mm.CustomIntegrator(timestep)
    integrator.addGlobalVariable("a_coef", coefficients[0])
    integrator.addGlobalVariable("b_coef", coefficients[1])
    integrator.addGlobalVariable("c_coef", coefficients[2])
    integrator.addGlobalVariable("vscale", math.exp(-friction * timestep))
    integrator.addGlobalVariable("noisescale", math.sqrt(1 - math.exp(-2 * friction * timestep)))
    integrator.addGlobalVariable("kT", KB * temperature)
    integrator.addPerDofVariable("x1", 0)
    integrator.addPerDofVariable("fmix", 0)
    integrator.addUpdateContextState()
    # one computation may read one force group only: the mixture is summed in three steps
    integrator.addComputePerDof("fmix", "a_coef*f0")
    integrator.addComputePerDof("fmix", "fmix + b_coef*f1")
    integrator.addComputePerDof("fmix", "fmix + c_coef*f2")
    integrator.addComputePerDof("v", "v + dt*fmix/m")
    integrator.addConstrainVelocities()
    integrator.addComputePerDof("x", "x + 0.5*dt*v")
    integrator.addComputePerDof("v", "vscale*v + noisescale*sqrt(kT/m)*gaussian")
    integrator.addComputePerDof("x", "x + 0.5*dt*v")
    integrator.addComputePerDof("x1", "x")
    integrator.addConstrainPositions()
    integrator.addComputePerDof("v", "v + (x-x1)/dt")
    integrator.addConstrainVelocities()
    return integrator


class ResolutionExchange:
    """Hamiltonian replica exchange over ``states`` ((K, 3) coefficients, :func:`resolution_states`
    or :func:`temperature_states`) of a ``system`` from :func:`resolution_system`.

    Each iteration: every replica runs ``steps`` steps of Langevin dynamics (``temperature`` K,
    ``friction`` 1/ps, ``timestep`` ps) in its state, then neighbouring states (even pairs, odd pairs
    alternately) attempt a swap with probability min(1, exp(-beta [U_i(x_b) + U_j(x_a) - U_i(x_a) -
    U_j(x_b)])).  ``samples`` holds the positions (n, atoms, 3) nm of the replica in state
    ``target`` (default: the (1, 1, 0) state, the all-atom ensemble) after every iteration.
    ``save(path)`` / ``load(path)`` checkpoint and resume (positions, velocities, states, counters,
    random state).
    """

    def __init__(self, system: mm.System, positions, states, *, temperature=300.0, friction=1.0, timestep=0.002,
                 steps: int = 250, platform=None, seed: int = 1, target: int | None = None):
        self.states = np.asarray(states, dtype=float)
        self.temperature = value_in(temperature, KELVIN, "temperature")
        self.beta = 1.0 / (KB * self.temperature)
        self.steps = int(steps)
        k = len(self.states)
        exact = np.flatnonzero(np.all(np.isclose(self.states, [1, 1, 0]), axis=1))
        self.target = int(exact[0]) if target is None and len(exact) else target
        if self.target is None:
            raise HeroBMError("no state is the all-atom one (1, 1, 0); give target=")
        platform = choose_platform(platform or "CPU")
        friction = value_in(friction, 1 / PICOSECOND, "friction")
        timestep = value_in(timestep, PICOSECOND, "timestep")
        self.contexts = []
        for r in range(k):
            integrator = mixed_langevin(self.temperature, friction, timestep, self.states[r])
            integrator.setRandomNumberSeed(seed * 1000 + r + 1)
            context = mm.Context(system, integrator, platform, {"Threads": "1"} if platform.getName() == "CPU" else {})
            context.setPositions(positions)
            context.applyConstraints(1e-6)
            context.setVelocitiesToTemperature(self.temperature * unit.kelvin, seed * 1000 + r + 1)
            self.contexts.append(context)
        self.rng = np.random.default_rng(seed)
        self.state_of = np.arange(k)  # state of each replica
        self.attempts = np.zeros(k - 1, dtype=int)
        self.accepts = np.zeros(k - 1, dtype=int)
        self.iteration = 0
        self.history = []  # state_of after every iteration
        self.samples = []

    def group_energies(self, replica: int) -> np.ndarray:
        """(3,) kJ/mol: E_bonded, E_rest, E_CG of a replica's current positions."""
        context = self.contexts[replica]
        return np.array([context.getState(getEnergy=True, groups={g}).getPotentialEnergy()
                         .value_in_unit(unit.kilojoule_per_mole) for g in (BONDED, REST, CG)])

    def _set_state(self, replica: int, state: int) -> None:
        integrator = self.contexts[replica].getIntegrator()
        for name, value in zip(("a_coef", "b_coef", "c_coef"), self.states[state]):
            integrator.setGlobalVariableByName(name, float(value))

    def step(self) -> None:
        """One iteration: dynamics in every replica, then one sweep of neighbour swaps."""
        for context in self.contexts:
            context.getIntegrator().step(self.steps)
        energies = np.array([self.group_energies(r) for r in range(len(self.contexts))])  # (replicas, 3)
        replica_in = np.argsort(self.state_of)  # replica holding each state
        for i in range(self.iteration % 2, len(self.states) - 1, 2):
            a, b = replica_in[i], replica_in[i + 1]
            # U_i(x_b) + U_j(x_a) - U_i(x_a) - U_j(x_b) = (s_i - s_j) . (E(x_b) - E(x_a))
            delta = self.beta * float((self.states[i] - self.states[i + 1]) @ (energies[b] - energies[a]))
            self.attempts[i] += 1
            if delta <= 0 or self.rng.random() < math.exp(-delta):
                self.accepts[i] += 1
                self.state_of[a], self.state_of[b] = i + 1, i
                replica_in[i], replica_in[i + 1] = b, a
                self._set_state(a, i + 1)
                self._set_state(b, i)
        self.iteration += 1
        self.history.append(self.state_of.copy())
        holder = int(np.flatnonzero(self.state_of == self.target)[0])
        self.samples.append(self.contexts[holder].getState(getPositions=True).getPositions(asNumpy=True)
                            .value_in_unit(unit.nanometer))

    def run(self, iterations: int, reporters=()) -> None:
        """``iterations`` iterations; each reporter's ``report(self)`` is called after each."""
        for _ in range(int(iterations)):
            self.step()
            for reporter in reporters:
                reporter.report(self)

    @property
    def acceptance(self) -> np.ndarray:
        """(K - 1,) accepted fraction of the swaps between states i and i + 1."""
        return self.accepts / np.maximum(self.attempts, 1)

    def round_trips(self) -> int:
        """Completed trips of any replica from state 0 to state K - 1 and back to 0."""
        trips, k = 0, len(self.states)
        history = np.array(self.history)
        for r in range(history.shape[1] if len(history) else 0):
            phase = None  # 'up': last end visited was 0; 'down': was K - 1 after 0
            for s in history[:, r]:
                if s == 0:
                    if phase == "down":
                        trips += 1
                    phase = "up"
                elif s == k - 1 and phase == "up":
                    phase = "down"
        return trips

    def save(self, path) -> None:
        """Checkpoint (an ``.npz``): positions and velocities of every replica, states, counters,
        samples and the random state; written to a temporary name first, then moved."""
        path = Path(path)
        states = [c.getState(getPositions=True, getVelocities=True) for c in self.contexts]
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, positions=np.array([s.getPositions(asNumpy=True).value_in_unit(unit.nanometer) for s in states]),
                 velocities=np.array([s.getVelocities(asNumpy=True).value_in_unit(unit.nanometer / unit.picosecond)
                                      for s in states]),
                 state_of=self.state_of, attempts=self.attempts, accepts=self.accepts, iteration=self.iteration,
                 history=np.array(self.history).reshape(-1, len(self.states)), samples=np.array(self.samples)
                 .reshape(-1, self.contexts[0].getSystem().getNumParticles(), 3),
                 rng=json.dumps(self.rng.bit_generator.state))
        tmp.replace(path)

    def load(self, path) -> None:
        """Resume from :meth:`save`'s checkpoint (same System, states and settings)."""
        data = np.load(path)
        if len(data["state_of"]) != len(self.states):
            raise HeroBMError(f"{path}: a checkpoint of {len(data['state_of'])} replicas, this exchange has "
                              f"{len(self.states)}")
        for r, context in enumerate(self.contexts):
            context.setPositions(data["positions"][r])
            context.setVelocities(data["velocities"][r])
        self.state_of = data["state_of"].copy()
        for r, s in enumerate(self.state_of):
            self._set_state(r, int(s))
        self.attempts, self.accepts = data["attempts"].copy(), data["accepts"].copy()
        self.iteration = int(data["iteration"])
        self.history = list(data["history"])
        self.samples = list(data["samples"])
        self.rng.bit_generator.state = json.loads(str(data["rng"]))

"""Staged L-BFGS minimisation: soft start, no electrostatics, full force field, max-force polish.

Minimisation runs *without* constraints (OpenMM's L-BFGS is ~100x slower with them on the
CPU platform); constraints are added only for dynamics.
"""

from __future__ import annotations

import time

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

from ..errors import HeroBMError
from ..progress import heartbeat, say

KJ_NM = unit.kilojoule_per_mole / unit.nanometer


def potential(simulation: app.Simulation) -> float:
    return simulation.context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def minimize(simulation: app.Simulation, tolerance: float = 500.0, *, max_iterations: int = 0,
             restraint_parameter: str | None = None, attempts: int = 3) -> dict:
    """L-BFGS to an RMS force below ``tolerance`` kJ/mol/nm (OpenMM's criterion), in two stages.

    1. Without electrostatics (charges zeroed in the nonbonded and implicit-solvent forces,
       Lennard-Jones on): bonds, angles, clashes and the restraints settle first.  From a
       backmapped start, full Coulomb drives hydroxyl/amine hydrogens (no LJ radius in
       Amber) and 1-3/1-4 partners into each other: energies of -1e6 kJ/mol, NaN.
    2. The full force field polishes.  If that collapses two unbonded atoms (< 0.09 nm) or
       fails, it is redone with charged zero-radius particles given a small repulsive shell
       (sigma 0.1 nm), and failing that the stage-1 structure is kept (reported).

    OpenMM's L-BFGS stops when a line search fails, which happens on frustrated starts (a
    stiff restraint against a strained chain break): a stage is then restarted with the
    restraint ``restraint_parameter`` halved (10x softer after non-finite positions, which
    also restores the start), at most ``attempts`` passes; the strength is reset after.
    Returns {"passes", "restraint_scale", "stage2": "full"|"shell"|"skipped", "rms_force"}.
    """
    context = simulation.context
    k0 = context.getParameter(restraint_parameter) if restraint_parameter else None
    info = {"passes": 0, "restraint_scale": 1.0, "soft_start": False}
    if _collapsed(simulation, 0.08):
        info["soft_start"] = True
        soft_start(simulation, tolerance, max_iterations)
    with _no_electrostatics(simulation):
        _minimize_with_retries(simulation, tolerance, max_iterations, restraint_parameter, k0, attempts, info)
    relaxed = context.getState(getPositions=True).getPositions(asNumpy=True)
    info["stage2"] = "skipped"
    for stage2, shell in (("full", False), ("shell", True)):
        with _repulsive_polar_hydrogens(simulation, enabled=shell):
            finite, _ = _minimize_pass(simulation, tolerance, max_iterations)
        info["passes"] += 1
        collapsed = _collapsed(simulation, 0.09) if finite else False
        if finite and not collapsed:
            info["stage2"] = stage2
            break
        info[f"stage2_{stage2}_failed"] = collapsed or "non-finite"
        context.setPositions(relaxed)
    if k0 is not None:
        context.setParameter(restraint_parameter, k0)
    _polish_max_force(simulation, tolerance, info)
    info["rms_force"] = _rms_force(context)
    return info


MAX_FORCE = 1.0e4  # kJ/mol/nm on any one atom: above this, dynamics from the structure can blow up
POLISH_ITERATIONS = 2000  # per pass, in blocks of POLISH_BLOCK with a max-force check after each
# 25: the few strained atoms are relieved within a few blocks; 200-iteration blocks spent most of
# a polished frame's time lowering the RMS force of everything else (20 real frames: 149 -> 100 s)
POLISH_BLOCK = 25
POLISH_SECONDS = 60.0  # wall-time budget of the whole polish (a 1,272-residue chain took > 15 min uncapped)


def _polish_max_force(simulation: app.Simulation, tolerance: float, info: dict) -> None:
    """OpenMM stops on the RMS force, which over 10^4 atoms hides a few atoms under huge forces
    (a strained ring, a tangled methyl); minimise on (tolerance / 10) while any atom feels
    more than :data:`MAX_FORCE`, at most twice and for at most :data:`POLISH_SECONDS`, undoing a
    pass that breaks something.  ``info`` gets the largest force left (``max_force``) and
    ``polish_capped`` when the time budget ran out first."""
    info["max_force"] = _max_force(simulation.context)
    deadline = time.perf_counter() + POLISH_SECONDS
    for _ in range(2):
        if info["max_force"] <= MAX_FORCE:
            return
        start = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
        for _block in range(POLISH_ITERATIONS // POLISH_BLOCK):
            finite, _ = _minimize_pass(simulation, tolerance / 10, POLISH_BLOCK)
            if not finite or _collapsed(simulation, 0.09):
                simulation.context.setPositions(start)
                info["max_force"] = _max_force(simulation.context)
                return
            info["max_force"] = _max_force(simulation.context)
            if info["max_force"] <= MAX_FORCE or time.perf_counter() > deadline:
                break
        info["polish_passes"] = info.get("polish_passes", 0) + 1
        if info["max_force"] > MAX_FORCE and time.perf_counter() > deadline:
            info["polish_capped"] = True
            return


def relax_solvent(simulation: app.Simulation, tolerance: float, max_iterations: int, hold_parameter: str,
                  hold_k: float) -> dict:
    """Two capped L-BFGS passes over a freshly solvated system: the solute held (global parameter
    ``hold_parameter`` = ``hold_k``: only water and ions move), then everything (hold off, the
    bead restraint and stereo guards stay).  A pass that goes non-finite is undone.  Returns
    the RMS and largest force after each pass (kJ/mol/nm) or ``<pass>_undone``."""
    info = {}
    for stage, k in (("water", hold_k), ("all", 0.0)):
        simulation.context.setParameter(hold_parameter, k)
        start = simulation.context.getState(getPositions=True).getPositions(asNumpy=True)
        finite, rms = _minimize_pass(simulation, tolerance, max_iterations)
        if not finite:
            simulation.context.setPositions(start)
            info[f"{stage}_undone"] = True
        else:
            info[f"{stage}_rms_force"] = round(float(rms), 1)
            info[f"{stage}_max_force"] = round(_max_force(simulation.context), 1)
    simulation.context.setParameter(hold_parameter, 0.0)
    return info


def _minimize_with_retries(simulation, tolerance, max_iterations, restraint_parameter, k0, attempts, info) -> None:
    context = simulation.context
    start = context.getState(getPositions=True).getPositions(asNumpy=True)
    for _ in range(attempts):
        finite, rms = _minimize_pass(simulation, tolerance, max_iterations)
        info["passes"] += 1
        if finite and rms <= tolerance:
            return
        if not finite:
            context.setPositions(start)
        if k0 is None:
            if finite:
                return
            continue
        info["restraint_scale"] *= 0.5 if finite else 0.1
        context.setParameter(restraint_parameter, k0 * info["restraint_scale"])
    if not finite:
        if k0 is not None:
            context.setParameter(restraint_parameter, k0)
        raise HeroBMError("minimisation produced non-finite positions; the backmapped structure has overlapping "
                          "atoms that the force field cannot resolve (try --restraint-k 0 or check the CG input)")


class _no_electrostatics:
    """Context manager: every charge (NonbondedForce particles and exceptions, GBSAOBCForce) set to zero,
    and with ``lennard_jones=False`` every Lennard-Jones well too."""

    def __init__(self, simulation: app.Simulation, lennard_jones: bool = True):  # noqa: D107
        self.lj = lennard_jones
        self.context = simulation.context
        self.forces = [f for f in simulation.system.getForces() if isinstance(f, (mm.NonbondedForce, mm.GBSAOBCForce))]
        self.saved = []

    def __enter__(self):
        for force in self.forces:
            if isinstance(force, mm.NonbondedForce):
                particles = [force.getParticleParameters(i) for i in range(force.getNumParticles())]
                exceptions = [force.getExceptionParameters(i) for i in range(force.getNumExceptions())]
                for i, (q, sigma, eps) in enumerate(particles):
                    force.setParticleParameters(i, 0.0, sigma, eps if self.lj else 0.0)
                for k, (i, j, qq, sigma, eps) in enumerate(exceptions):
                    force.setExceptionParameters(k, i, j, 0.0, sigma, eps if self.lj else 0.0)
                self.saved.append((force, particles, exceptions))
            else:
                particles = [force.getParticleParameters(i) for i in range(force.getNumParticles())]
                for i, (q, radius, scale) in enumerate(particles):
                    force.setParticleParameters(i, 0.0, radius, scale)
                self.saved.append((force, particles, None))
            force.updateParametersInContext(self.context)

    def __exit__(self, *exc):
        for force, particles, exceptions in self.saved:
            for i, params in enumerate(particles):
                force.setParticleParameters(i, *params)
            for k, params in enumerate(exceptions or ()):
                force.setExceptionParameters(k, *params)
            force.updateParametersInContext(self.context)


SOFT_K = 5.0e4  # kJ/mol: height of the capped repulsion at full overlap
_BONDED = (mm.HarmonicBondForce, mm.HarmonicAngleForce, mm.PeriodicTorsionForce, mm.RBTorsionForce,
           mm.CustomTorsionForce, mm.CMAPTorsionForce, mm.CustomAngleForce, mm.CustomCompoundBondForce)


def soft_start(simulation: app.Simulation, tolerance: float, max_iterations: int = 0) -> None:
    """Push overlapping atoms apart before the force field sees them (its r^-12 is infinite there).

    A separate System with the same particles, every bonded force and stereo guard
    (torsions, CMAP, chirality, cis/trans) but not the bead restraint and, instead of all nonbonded forces, a capped repulsion
    ``k (1 - r/s)^2`` for ``r < s`` (s = 0.3 nm between heavy atoms, 0.25 nm heavy-H,
    0.2 nm H-H; same exclusions as the NonbondedForce).  Force fields keep Lennard-Jones in
    different forces (Amber: NonbondedForce; CHARMM: custom forces with NBFIX), so the
    whitelist of bonded forces is what makes this work for any of them.
    """
    system = simulation.system
    soft = mm.System()
    soft.setDefaultPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    for i in range(system.getNumParticles()):
        soft.addParticle(system.getParticleMass(i))
    for force in system.getForces():
        if isinstance(force, _BONDED):  # (a TorchForce does not survive XML copying: left out)
            soft.addForce(mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(force)))
    repulsion = mm.CustomNonbondedForce("k_soft*step(s-r)*(1-r/s)^2; s=radius1+radius2")
    repulsion.addGlobalParameter("k_soft", SOFT_K)
    repulsion.addPerParticleParameter("radius")
    for atom in simulation.topology.atoms():
        repulsion.addParticle([0.1 if atom.element is app.element.hydrogen else 0.15])
    nonbonded = [f for f in system.getForces() if isinstance(f, mm.NonbondedForce)]
    if nonbonded:
        for k in range(nonbonded[0].getNumExceptions()):
            repulsion.addExclusion(*nonbonded[0].getExceptionParameters(k)[:2])
    else:
        for a, b in simulation.topology.bonds():
            repulsion.addExclusion(a.index, b.index)
    repulsion.setNonbondedMethod(mm.CustomNonbondedForce.CutoffPeriodic if system.usesPeriodicBoundaryConditions()
                                 else mm.CustomNonbondedForce.CutoffNonPeriodic)
    repulsion.setCutoffDistance(0.3 * unit.nanometer)
    soft.addForce(repulsion)
    context = mm.Context(soft, mm.VerletIntegrator(0.001), simulation.context.getPlatform())
    for name in _global_parameters(system):
        if name in _global_parameters(soft):
            context.setParameter(name, simulation.context.getParameter(name))
    context.setPositions(simulation.context.getState(getPositions=True).getPositions())
    mm.LocalEnergyMinimizer.minimize(context, tolerance, max_iterations)
    xyz = context.getState(getPositions=True).getPositions(asNumpy=True)
    if np.isfinite(xyz.value_in_unit(unit.nanometer)).all():
        simulation.context.setPositions(xyz)


def _global_parameters(system: mm.System) -> set:
    return {f.getGlobalParameterName(i) for f in system.getForces() if hasattr(f, "getNumGlobalParameters")
            for i in range(f.getNumGlobalParameters())}


def _minimize_pass(simulation: app.Simulation, tolerance: float, max_iterations: int) -> tuple[bool, float]:
    start = time.perf_counter()
    try:
        with heartbeat("L-BFGS pass"):
            simulation.minimizeEnergy(tolerance=tolerance * KJ_NM, maxIterations=max_iterations)
    except mm.OpenMMException:
        # OpenMM raises when a coordinate became NaN; anything else, with finite positions, is real
        if _positions_finite(simulation):
            raise
        say("  L-BFGS pass went non-finite after %.1f s (undone)", time.perf_counter() - start)
        return False, np.inf
    if not _positions_finite(simulation):
        say("  L-BFGS pass went non-finite after %.1f s (undone)", time.perf_counter() - start)
        return False, np.inf
    rms = _rms_force(simulation.context)
    # a big system spends minutes per pass: say where it is
    say("  L-BFGS pass: RMS force %.0f kJ/mol/nm, %.1f s", rms, time.perf_counter() - start)
    return bool(np.isfinite(rms)), rms


def _positions_finite(simulation: app.Simulation) -> bool:
    state = simulation.context.getState(getPositions=True)
    return bool(np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).all())


def _max_force(context: mm.Context) -> float:
    forces = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(KJ_NM)
    return float(np.linalg.norm(forces, axis=1).max())


def _rms_force(context: mm.Context) -> float:
    forces = context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(KJ_NM)
    return float(np.sqrt(np.mean(forces ** 2)))


def _collapsed(simulation: app.Simulation, distance_nm: float) -> str | bool:
    """The first two unbonded atoms closer than ``distance_nm`` (as a label), or False."""
    from scipy.spatial import cKDTree

    xyz = simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    pairs = cKDTree(xyz).query_pairs(distance_nm, output_type="ndarray")
    if not len(pairs):
        return False
    n = len(xyz)
    bonds = np.array([(a.index, b.index) for a, b in simulation.topology.bonds()], np.int64).reshape(-1, 2)
    bonds.sort(axis=1)
    pairs = np.sort(pairs, axis=1)
    loose = ~np.isin(pairs[:, 0] * n + pairs[:, 1], bonds[:, 0] * n + bonds[:, 1])
    if not loose.any():
        return False
    i, j = pairs[np.argmax(loose)]
    atoms = list(simulation.topology.atoms())
    return f"{_atom_label(atoms[i])} - {_atom_label(atoms[j])}"


def _atom_label(atom) -> str:
    return f"{atom.residue.name} {atom.residue.id} {atom.name}"


class _repulsive_polar_hydrogens:
    """Context manager: charged particles without Lennard-Jones get sigma 0.1 nm, eps 0.1 kJ/mol."""

    def __init__(self, simulation: app.Simulation, enabled: bool = True):  # noqa: D107
        forces = [f for f in simulation.system.getForces() if isinstance(f, mm.NonbondedForce)]
        self.context, self.force, self.bare = simulation.context, forces[0] if forces else None, []
        if enabled and self.force is not None:
            for i in range(self.force.getNumParticles()):
                q, sigma, eps = self.force.getParticleParameters(i)
                if eps.value_in_unit(unit.kilojoule_per_mole) == 0.0 and q.value_in_unit(unit.elementary_charge) != 0.0:
                    self.bare.append((i, q, sigma, eps))

    def _set(self, original: bool) -> None:
        for i, q, sigma, eps in self.bare:
            if original:
                self.force.setParticleParameters(i, q, sigma, eps)
            else:
                self.force.setParticleParameters(i, q, 0.1 * unit.nanometer, 0.1 * unit.kilojoule_per_mole)
        if self.bare:
            self.force.updateParametersInContext(self.context)

    def __enter__(self):
        self._set(False)

    def __exit__(self, *exc):
        self._set(True)

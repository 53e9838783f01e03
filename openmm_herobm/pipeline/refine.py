"""Hydrogens, force field, minimisation and equilibration in OpenMM.

Minimisation runs *without* constraints (OpenMM's L-BFGS is ~100x slower with them on the
CPU platform); constraints are added only for dynamics.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import random
import time
from pathlib import Path

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

from ..chemistry import PROTEIN_RESIDUES
from ..errors import HeroBMError

KJ_NM = unit.kilojoule_per_mole / unit.nanometer

#: stage messages ("hydrogens ...", "hydrogens done in 3.2 s"): the ``herobm`` command shows them
#: on stderr, a library user with ``logging.basicConfig(level=logging.INFO)``
log = logging.getLogger("openmm_herobm")

#: where progress inside a long stage goes (a reporter's stage, see :func:`reporting`), besides the log
_progress = contextvars.ContextVar("herobm_progress", default=None)


@contextlib.contextmanager
def reporting(callback):
    """Within the block, progress inside long work (each L-BFGS pass, each block of dynamics) is
    also passed to ``callback(text)``: the pipeline's reporters hear about it."""
    token = _progress.set(callback)
    try:
        yield
    finally:
        _progress.reset(token)


def _say(message: str, *args) -> None:
    log.info(message, *args)
    callback = _progress.get()
    if callback is not None:
        callback((message % args).strip())


#: random seed of the Langevin integrator and the initial velocities: the same input, options and
#: platform give the same output (OpenMM's seed 0 would mean a new seed every run)
SEED = 20241205

#: force-field files per solvent model
IMPLICIT = "implicit/obc2.xml"
EXPLICIT_WATER = "amber14/tip3pfb.xml"
CHARMM_WATER = "charmm36/water.xml"  # CHARMM TIP3P and ions
CUTOFF_NM = 1.0  # nonbonded cutoff of every System (a periodic box must be at least twice as wide)


def choose_platform(name: str | mm.Platform | None = None) -> mm.Platform:
    """The named platform (or the ``openmm.Platform`` given), else the fastest available one (CUDA, OpenCL, CPU, Reference); a CPU
    platform gets the thread count of :mod:`openmm_herobm.threads`."""
    from ..threads import openmm_platform_ready

    platform = _choose_platform(name)
    openmm_platform_ready(platform)
    return platform


def _choose_platform(name) -> mm.Platform:
    if isinstance(name, mm.Platform):
        return name
    available = [mm.Platform.getPlatform(i).getName() for i in range(mm.Platform.getNumPlatforms())]
    if name:
        if name not in available:
            raise HeroBMError(f"OpenMM platform {name!r} is not available here (available: {', '.join(available)})")
        return mm.Platform.getPlatformByName(name)
    for candidate in ("CUDA", "HIP", "OpenCL", "CPU", "Reference"):
        if candidate in available:
            return mm.Platform.getPlatformByName(candidate)
    raise HeroBMError("no OpenMM platform is available")


def load_forcefield(forcefield: str | list[str] | app.ForceField, solvent: str | None) -> app.ForceField:
    """The ForceField of these XML files plus the solvent model's (``implicit/obc2.xml``, or the
    water and ions matching the force field); a ForceField object is used as given (it must hold
    the solvent model asked for)."""
    if isinstance(forcefield, app.ForceField):
        return forcefield
    files = [forcefield] if isinstance(forcefield, str) else list(forcefield)
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


@contextlib.contextmanager
def seeded_python_random(seed: int = SEED):
    """Modeller places new hydrogens and ions with Python's ``random``: seed it for the call (and
    give the caller's random state back after), so the same input gives the same atoms.  A context
    manager, or a decorator (``add_hydrogens``)."""
    saved = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved)


@seeded_python_random()
def add_hydrogens(modeller: app.Modeller, forcefield: app.ForceField, ph: float, variants: list,
                  platform: mm.Platform | None = None) -> list:
    """Terminal OXT and hydrogens at ``ph`` (protonation variants given in the input are kept);
    returns the variant of every residue (what Modeller chose: pass it back for the same atoms)."""
    positions = np.asarray(modeller.positions.value_in_unit(unit.nanometer))
    topology, positions = add_terminal_oxygens(modeller.topology, positions)
    modeller.topology, modeller.positions = topology, unit.Quantity(positions, unit.nanometer)
    variants = terminal_variants(topology, variants)
    load_hydrogen_definitions(forcefield, topology)
    if any(r.name not in PROTEIN_RESIDUES for r in modeller.topology.residues()):
        # lipids/ligands: their heavy atoms may overlap (raw model output), which makes the
        # hydrogen relaxation of addHydrogens (heavy atoms fixed, no cutoff) fail after a long
        # run; place hydrogens by geometry, the staged minimisation relaxes them
        used = modeller.addHydrogens(None, pH=ph, variants=variants)
        separate_overlapping_hydrogens(modeller)
        return used
    # the platform matters: addHydrogens minimises the new hydrogens (Reference is slow)
    try:
        used = modeller.addHydrogens(forcefield, pH=ph, variants=variants, platform=platform,
                                     residueTemplates=named_templates(forcefield, modeller.topology))
    except mm.OpenMMException:
        # the relaxation of the new hydrogens (heavy atoms fixed) failed (it blows up to NaN on
        # overlapping heavy atoms): place them by geometry only; the staged minimisation follows
        used = modeller.addHydrogens(None, pH=ph, variants=variants)
    separate_overlapping_hydrogens(modeller)
    return used


def terminal_variants(topology: app.Topology, variants: list) -> list:
    """``variants`` with the neutral ASH/GLH/LYN of chain ends left to the pH (amber14 has no
    terminal templates for them)."""
    variants = list(variants)
    for chain in topology.chains():
        residues = list(chain.residues())
        for end in {residues[0].index, residues[-1].index}:
            if variants[end] in ("ASH", "GLH", "LYN"):
                variants[end] = None
    return variants


def templates_free_residues(forcefield: app.ForceField, topology: app.Topology, positions_nm: np.ndarray,
                            variants: list, residues: list[int], ph: float) -> bool:
    """Whether ``forcefield`` parameterises the ``residues`` of ``topology`` as free amino acids
    (both termini on one residue: CHARMM36 patches them, amber14 has no such template).

    Checked up front on one residue of each name, alone, with its OXT and hydrogens at ``ph``,
    so that a force field that cannot is known before the whole system is built.
    """
    modeller = app.Modeller(topology, unit.Quantity(positions_nm, unit.nanometer))
    every = list(topology.residues())
    first = {}
    for index in residues:
        first.setdefault((every[index].name, variants[index]), index)
    keep = set(first.values())
    modeller.delete([r for r in topology.residues() if r.index not in keep])
    kept = sorted(keep)
    xyz = np.asarray(modeller.positions.value_in_unit(unit.nanometer))
    probe, xyz = add_terminal_oxygens(modeller.topology, xyz)
    modeller = app.Modeller(probe, unit.Quantity(xyz, unit.nanometer))
    modeller.addHydrogens(None, pH=ph, variants=terminal_variants(probe, [variants[i] for i in kept]))
    try:
        forcefield.createSystem(modeller.topology)
    except ValueError:  # OpenMM's "no template for this residue"
        return False
    return True


def separate_overlapping_hydrogens(modeller: app.Modeller, distance_nm: float = 0.05, hh_distance_nm: float = 0.12,
                                   seed: int = 0) -> int:
    """Move hydrogens that sit on another atom (< ``distance_nm``), or on another hydrogen
    (< ``hh_distance_nm``; geminal ones are 0.175 nm apart), by 0.03 nm in a random (seeded) direction.

    Geometric placement can put the two hydrogens of a CH2 whose neighbours are collinear, or
    of a methyl built on a collapsed group, (nearly) on one spot; there the H-C-H angle force
    has (almost) no gradient, so minimisation does not separate them and dynamics blows up.
    Returns how many were moved.
    """
    from scipy.spatial import cKDTree

    xyz = np.asarray(modeller.positions.value_in_unit(unit.nanometer), dtype=np.float64)
    pairs = cKDTree(xyz).query_pairs(max(distance_nm, hh_distance_nm), output_type="ndarray")
    if not len(pairs):
        return 0
    atoms = list(modeller.topology.atoms())
    is_h = np.array([a.element is app.element.hydrogen for a in atoms])
    length = np.linalg.norm(xyz[pairs[:, 0]] - xyz[pairs[:, 1]], axis=1)
    bad = pairs[(length < distance_nm) | (is_h[pairs].all(1) & (length < hh_distance_nm))]
    hydrogens = {int(i) for i in bad.ravel() if is_h[i]}
    rng = np.random.default_rng(seed)
    for i in sorted(hydrogens):
        step = rng.normal(size=3)
        xyz[i] += 0.03 * step / np.linalg.norm(step)
    modeller.positions = unit.Quantity(xyz, unit.nanometer)
    return len(hydrogens)


def named_templates(forcefield: app.ForceField, topology: app.Topology) -> dict:
    """{residue: its name} for non-protein residues named like a template of ``forcefield``.

    CHARMM36 has two cholesterol templates with the same atoms (CHL1, CLOL): the name decides.
    """
    return {r: r.name for r in topology.residues() if r.name not in PROTEIN_RESIDUES and r.name in forcefield._templates}


def load_hydrogen_definitions(forcefield: app.ForceField, topology: app.Topology) -> list[str]:
    """Teach ``Modeller.addHydrogens`` the residues it has no definitions for (lipids, ligands).

    Each hydrogen's parent is the heavy atom it is bonded to in the force field's template
    of that name; returns the residue names that got definitions.
    """
    import tempfile
    from xml.sax.saxutils import quoteattr

    app.Modeller._loadStandardHydrogenDefinitions()  # else they would load later, on top of ours
    known = app.Modeller._residueHydrogens
    lines, added = ["<Residues>"], []
    for name in sorted({r.name for r in topology.residues()} - set(known)):
        template = forcefield._templates.get(name)
        if template is None:
            continue
        lines.append(f" <Residue name={quoteattr(name)}>")
        for i, j in template.bonds:
            for h, parent in ((i, j), (j, i)):
                atom, heavy = template.atoms[h], template.atoms[parent]
                if atom.element is app.element.hydrogen and heavy.element is not app.element.hydrogen:
                    lines.append(f"  <H name={quoteattr(atom.name)} parent={quoteattr(heavy.name)}/>")
        lines.append(" </Residue>")
        added.append(name)
    if added:
        with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as f:
            f.write("\n".join(lines + ["</Residues>"]))
        try:
            app.Modeller.loadHydrogenDefinitions(f.name)
        finally:
            Path(f.name).unlink()
    return added


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
POLISH_BLOCK = 200
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


#: s between "still running" lines inside one L-BFGS pass (a pass over 10^5 atoms takes minutes)
PROGRESS_SECONDS = 30.0


@contextlib.contextmanager
def _heartbeat(what: str):
    """While the block runs, a line every :data:`PROGRESS_SECONDS` saying how long it has run.

    A thread, because OpenMM's minimiser cannot call back into Python here: a
    MinimizationReporter holds the GIL, and openmm-torch's force then refuses to run."""
    import threading

    callback, start, done = _progress.get(), time.perf_counter(), threading.Event()

    def beat():
        while not done.wait(PROGRESS_SECONDS):
            message = f"  {what} running, {time.perf_counter() - start:.0f} s"
            log.info(message)
            if callback is not None:
                callback(message.strip())

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()


def _minimize_pass(simulation: app.Simulation, tolerance: float, max_iterations: int) -> tuple[bool, float]:
    start = time.perf_counter()
    try:
        with _heartbeat("L-BFGS pass"):
            simulation.minimizeEnergy(tolerance=tolerance * KJ_NM, maxIterations=max_iterations)
    except mm.OpenMMException:
        # OpenMM raises when a coordinate became NaN; anything else, with finite positions, is real
        if _positions_finite(simulation):
            raise
        _say("  L-BFGS pass went non-finite after %.1f s (undone)", time.perf_counter() - start)
        return False, np.inf
    if not _positions_finite(simulation):
        _say("  L-BFGS pass went non-finite after %.1f s (undone)", time.perf_counter() - start)
        return False, np.inf
    rms = _rms_force(simulation.context)
    # a big system spends minutes per pass: say where it is
    _say("  L-BFGS pass: RMS force %.0f kJ/mol/nm, %.1f s", rms, time.perf_counter() - start)
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


def equilibrate(simulation: app.Simulation, picoseconds: float, temperature: float, restraint_parameter: str | None,
                stages: int = 5) -> None:
    """NVT heating in ``stages`` steps from 50 K to ``temperature`` with the restraint on, then release it."""
    steps_total = int(round(picoseconds / 0.002))
    heat = steps_total // 2
    integrator = simulation.integrator
    simulation.context.setVelocitiesToTemperature(50 * unit.kelvin, SEED)
    for k in range(stages):
        target = 50 + (temperature - 50) * (k + 1) / stages
        integrator.setTemperature(target * unit.kelvin)
        simulation.step(max(heat // stages, 1))
        _say("  heating %d/%d to %.0f K", k + 1, stages, target)
    if restraint_parameter is not None:
        simulation.context.setParameter(restraint_parameter, 0.0)
    simulation.step(max(steps_total - heat, 1))
    _say("  %.1f ps without the bead restraint", (steps_total - heat) * 0.002)

"""``backmap_and_simulate``: CG input -> simulation-ready all-atom system, in one call.

Stages (each timed): model (heavy atoms, TorchScript) -> topology -> backbone optimisation
-> hydrogens at a pH -> force field (+ solvent) with the bead restraint (openmm-torch) ->
L-BFGS minimisation -> optional equilibration -> outputs (PDB/mmCIF, System and State XML,
JSON report).  Trajectories reuse frame 0's topology and System for every frame.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mdtraj
import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

from ..chemistry import PROTEIN_RESIDUES, WATER_BEADS, WATERS_PER_BEAD
from ..errors import HeroBMError
from .backbone import optimise_backbone
from .chirality import (BACKBONE_FORCE, CHIRALITY_FORCE, CIS_FORCE, MOLECULE_CHIRALITY_FORCE, PEPTIDE_FORCE,
                        chirality_restraint_force, molecule_stereo_force,
                        peptide_restraint_force, ramachandran_force, repair_chirality, repair_molecule_stereo,
                        stretch_collapsed_bonds)
from ..units import KELVIN, KJ_PER_MOL_NM, KJ_PER_MOL_NM2, NANOMETER, PICOSECOND, value_in
from .dynamics import equilibrate
from .hydrogens import add_hydrogens, seeded_python_random, templates_free_residues
from .minimize import minimize, potential, relax_solvent
from .platform import choose_platform
from ..progress import reporting
from .system import CUTOFF_NM, build_simulation, load_forcefield, named_templates
from .reporters import JSONReporter, ProgressReporter, Stages
from .solvent import HOLD_FORCE, HOLD_K, HOLD_PARAMETER, SOLVENT_ITERATIONS, clear_bilayer_core, solute_hold_force
from .restraint import PARAMETER, bead_restraint_force
from .topology import prepare_topology


#: nm: margin of the bead restraint's flat bottom on a CG simulation frame, beyond where the sound
#: reconstruction left each bead (scaled by how simulation-like the frame is; mapped beads get
#: none); chosen on the real-frame benchmark (BENCHMARKS.md)
RESTRAINT_TOLERANCE = 0.01

#: what the bead restraint holds: 'sound', the beads a real structure can meet (the CG-simulation
#: deformation undone), never pulled past where the fit left them; 'input', the input beads themselves
RESTRAINT_TARGETS = ("sound", "input")

#: forces the pipeline adds for refinement only; the System written for production has none
PIPELINE_FORCES = ("HEroBM bead restraint", CHIRALITY_FORCE, PEPTIDE_FORCE, MOLECULE_CHIRALITY_FORCE, CIS_FORCE,
                   HOLD_FORCE, BACKBONE_FORCE)


@dataclass
class PipelineOptions:
    ph: float = 7.0
    forcefield: str | list | None = None  # None: amber14-all for proteins, charmm36 when lipids are present
    minimize: bool = True
    tolerance: float = 500.0  # kJ/mol/nm
    equilibrate_ps: float | None = None
    temperature: float = 300.0  # K
    solvent: str | None = "implicit"  # None (vacuum), 'implicit' (OBC2) or 'explicit' (TIP3P-FB, PME)
    platform: str | None = None
    restraint_k: float = 1.0e5  # kJ/mol/nm^2; 0 = no TorchForce
    restraint_tolerance: float = RESTRAINT_TOLERANCE  # nm, margin of the restraint's flat bottom on a simulation frame
    restraint_target: str = "sound"  # 'sound' (chemistry first) or 'input' (the input beads, chemistry bent)
    optimize_backbone: bool = True
    backbone_guard: bool = True  # the Ramachandran restraint of the fit during refinement (only with the fit)
    variants: list | None = None  # protonation variant per residue (None: the input's names, else the pH)


@dataclass
class SimulationResult:
    topology: app.Topology
    positions: unit.Quantity
    system: mm.System
    simulation: app.Simulation
    energies: dict = field(default_factory=dict)  # kJ/mol
    timings: dict = field(default_factory=dict)  # s
    report: dict = field(default_factory=dict)
    written: list = field(default_factory=list)
    residue_source: np.ndarray | None = None  # per output residue, its residue index in the model's output
    state: mm.State | None = None  # positions, velocities and energy of this result (what .state.xml holds)
    variants: list | None = None  # protonation variant of every residue (pass it on for the same atoms)
    frames: np.ndarray | None = None  # (frames, atoms, 3) nm: every refined frame (trajectory_output's)

    @property
    def trajectory(self) -> mdtraj.Trajectory:
        """The final structure as an mdtraj Trajectory (all atoms, nm; the unit cell of a periodic input)."""
        xyz = np.asarray(self.positions.value_in_unit(unit.nanometer), dtype=np.float32)[None]
        traj = mdtraj.Trajectory(xyz, mdtraj.Topology.from_openmm(self.topology))
        box = self.topology.getPeriodicBoxVectors()
        if box is not None:
            traj.unitcell_vectors = np.asarray(box.value_in_unit(unit.nanometer), np.float32)[None]
        return traj


PROTEIN_FORCEFIELD = "amber14-all.xml"
MEMBRANE_FORCEFIELD = "charmm36.xml"  # CHARMM36m protein + CHARMM36 lipids (POPC, cholesterol CHL1, ...)


def default_forcefield(topology, prepared=None) -> str:
    """amber14-all for proteins only; charmm36 as soon as anything else (lipids) is present, or
    when every residue of ``prepared`` is a free amino acid (amber14 has no template for one,
    CHARMM36 patches both termini onto it; a few free ones in a protein are left out instead)."""
    names = {r.name for r in topology.residues}
    if not names <= PROTEIN_RESIDUES:
        return MEMBRANE_FORCEFIELD
    if prepared is not None and prepared.free and len(prepared.free) == prepared.topology.getNumResidues():
        return MEMBRANE_FORCEFIELD
    return PROTEIN_FORCEFIELD


def forcefield_name(forcefield) -> str | list:
    """What reports and messages call the force field: its file name(s), or 'ForceField object'."""
    if isinstance(forcefield, app.ForceField):
        return "ForceField object"
    return forcefield if isinstance(forcefield, str) else " + ".join(forcefield)


class Pipeline:
    """The OpenMM stages after the model, for one backmapped input (all its frames).

    Like ``openmm.app``'s nouns, each stage can be called on its own and takes and returns
    OpenMM objects; :meth:`run` chains them for one frame::

        bm = hb.backmap("cg.pdb")
        pipeline = hb.Pipeline(bm, solvent="implicit", reporters=[hb.ProgressReporter()])
        modeller = pipeline.prepare_topology(frame=0)   # heavy atoms, bonds, backbone and stereo repaired
        pipeline.protonate(modeller)                    # hydrogens at the pH (variants fixed by the first frame)
        simulation = pipeline.create_simulation(modeller, frame=0)   # force field + guards + bead restraint
        pipeline.minimize(simulation, frame=0)
        result = pipeline.run(1)                        # or every stage of a frame at once

    The topology (bonds, chain breaks, disulfides, protonation) is decided on frame 0 and shared
    by every frame, so a trajectory has one topology; each frame's result has its own report and
    timings.  Units: see :func:`backmap_and_simulate` (quantities or plain numbers in nm, ps, K,
    kJ/mol).  ``reporters``: objects with ``report(StageEvent)`` (and optionally ``finish(result)``),
    e.g. :class:`ProgressReporter`, :class:`JSONReporter`.
    """

    def __init__(self, backmapped, *, ph: float = 7.0, forcefield=None, solvent: str | None = "implicit",
                 platform=None, temperature=300.0, tolerance=500.0, restraint_k=1.0e5,
                 restraint_tolerance=RESTRAINT_TOLERANCE, restraint_target: str = "sound",
                 optimize_backbone: bool = False, backbone_guard: bool = True, minimize: bool = True,
                 equilibrate=None, variants: list | None = None, reporters=(), source: str = ""):
        self.bm = backmapped
        self.options = PipelineOptions(
            ph=float(ph), forcefield=forcefield, minimize=minimize,
            tolerance=value_in(tolerance, KJ_PER_MOL_NM, "tolerance"),
            equilibrate_ps=value_in(equilibrate, PICOSECOND, "equilibrate"),
            temperature=value_in(temperature, KELVIN, "temperature"), solvent=solvent, platform=platform,
            restraint_k=value_in(restraint_k, KJ_PER_MOL_NM2, "restraint_k"),
            restraint_tolerance=value_in(restraint_tolerance, NANOMETER, "restraint_tolerance"),
            restraint_target=restraint_target, optimize_backbone=optimize_backbone, backbone_guard=backbone_guard,
            variants=variants)
        if solvent not in (None, "implicit", "explicit"):
            raise HeroBMError(f"solvent {solvent!r}: use None (vacuum), 'implicit' or 'explicit'")
        _check_restraint_target(restraint_target)
        options = self.options
        self.stages = Stages(reporters)
        self.platform = choose_platform(options.platform)
        # a periodic CG input is refined in its unit cell in every mode: molecules meet the
        # periodic images of others as in the CG simulation (not overlap them across the
        # boundary), and the written structure keeps the cell
        self.periodic = backmapped.box is not None
        frame0 = backmapped.trajectory.slice([0], copy=False)
        with self.stages("topology"):
            # free amino acids are kept if the force field has templates for them (checked below)
            self.prepared = prepare_topology(frame0, linked=backmapped.links(0), free=True)
        chosen = forcefield or default_forcefield(backmapped.trajectory.topology, self.prepared)
        named = forcefield_name(chosen)
        # explicit solvent: the solute is refined first without solvent (cheap, and its bad
        # contacts cannot push water around), then solvated and the water relaxed (solvate)
        self.explicit = options.solvent == "explicit"
        self.solute_solvent = None if self.explicit else options.solvent
        self.forcefield = load_forcefield(chosen, self.solute_solvent)
        self.solvated_forcefield = load_forcefield(chosen, "explicit") if self.explicit else None
        # hydrogens are placed (and briefly relaxed) with the force field alone: implicit
        # solvent would make that step several times slower for nothing
        self.hydrogen_forcefield = load_forcefield(chosen, None)
        #: what every frame's report starts from
        self.info: dict = {"platform": self.platform.getName(), "forcefield": named}
        prepared = self.prepared
        if prepared.free and not templates_free_residues(
                self.hydrogen_forcefield, prepared.topology, prepared.positions.value_in_unit(unit.nanometer),
                prepared.variants, prepared.free, options.ph):
            with self.stages("topology"):
                self.prepared = prepare_topology(frame0, linked=backmapped.links(0), free=False)
        self._setup_timings = dict(self.stages.timings)  # counted in the first frame's timings
        self.info.update(n_chain_breaks=self.prepared.n_breaks, n_disulfides=self.prepared.n_disulfides)
        dropped = self.prepared.dropped
        if dropped and not self.prepared.source_residue.size:
            where = f"{source}: " if source else ""
            raise HeroBMError(f"{where}nothing to refine: every residue is a free amino acid, bonded to no neighbour "
                              f"({', '.join(dropped[:5])}{', ...' if len(dropped) > 5 else ''}), and {named} has "
                              f"no template for one; refine them with the charmm36.xml force field (--forcefield "
                              f"charmm36.xml), which patches both termini onto one residue, or keep the model's "
                              f"heavy atoms with --no-minimize")
        if dropped:
            self.info["dropped_residues"] = list(dropped)
            warnings.warn(f"{len(dropped)} residue(s) bonded to no neighbour (alone in their chain or between two "
                          f"chain breaks) left out of the refined structure: {named} has no template for a "
                          f"free amino acid (charmm36.xml has): {', '.join(dropped[:10])}", stacklevel=3)
        if self.prepared.free:
            self.info["free_amino_acids"] = len(self.prepared.free)
        self.variants = list(self.prepared.variants) if options.variants is None else list(options.variants)
        if len(self.variants) != self.prepared.topology.getNumResidues():
            raise HeroBMError(f"variants: {len(self.variants)} given for {self.prepared.topology.getNumResidues()} "
                              f"residues; pass the list a previous run of the same input returned")
        self.source = self.prepared.source_atom
        if restraint_target == "input":
            # the input beads themselves, harmonic beyond restraint_tolerance: what the CG frame
            # said, at the price of bonds and angles (BENCHMARKS.md, "bead fidelity frontier")
            self.beads = backmapped.cg_xyz.astype(np.float64)
            self.flat_bottom = np.zeros(self.beads.shape[:2])
            self.margin = np.ones(self.beads.shape[:2])
        else:
            # the flat bottom of each bead: zero for mapped beads (they are exact); on a CG simulation
            # frame, where the sound reconstruction left it (no real structure meets those beads; the
            # force field may bring it closer, the restraint never pulls it further) plus a margin
            self.beads = backmapped.bead_targets.astype(np.float64)
            n_frames = len(self.beads)
            likeness = np.concatenate([np.broadcast_to(
                (np.zeros(n_frames) if p.simulation_likeness is None else p.simulation_likeness)[:, None],
                (n_frames, p.system.n_beads)) for p in backmapped.parts], axis=1)  # (frames, beads)
            misfit = backmapped.bead_misfit
            self.flat_bottom = likeness * (0.0 if misfit is None else misfit)
            self.margin = likeness
        self.topology = None  # the protonated topology, set by the first protonate()
        self.omega_reference = None  # which X-Pro peptides are cis: this frame's (create_simulation)
        self.heavy_particles = None
        self._simulation = None  # frame 0's Simulation, reused by later frames (one System)
        self._report: dict = {}

    # -- stages --------------------------------------------------------------------------
    def prepare_topology(self, frame: int = 0) -> app.Modeller:
        """Frame ``frame``'s heavy atoms on the shared topology (bonds, termini, disulfides),
        backbone optimised (with ``optimize_backbone``) and stereo centres repaired (nm)."""
        positions = self.bm.trajectory.xyz[frame].astype(np.float64)[self.prepared.source_atom]
        report = self._report
        if self.options.optimize_backbone:
            with self.stages("backbone", frame):
                phi_psi = self.bm.phi_psi(frame)[self.prepared.source_residue]
                result = optimise_backbone(self.prepared.topology, positions, phi_psi)
                positions = result.positions
                report["omega_fixed"] = report.get("omega_fixed", 0) + result.n_omega_fixed
        # stereo repair after the backbone is sane (a collapsed N-CA-C makes every centre flat)
        with self.stages("chirality", frame):
            positions, repaired = repair_chirality(self.prepared.topology, positions)
            positions, more = repair_molecule_stereo(self.prepared.topology, positions)
            repaired.update(more)
            positions, stretched = stretch_collapsed_bonds(self.prepared.topology, positions)
            if stretched:
                report["stretched_collapsed_bonds"] = report.get("stretched_collapsed_bonds", 0) + stretched
            for key, count in repaired.items():
                report[f"repaired_chirality_{key}"] = report.get(f"repaired_chirality_{key}", 0) + count
        return app.Modeller(self.prepared.topology, unit.Quantity(positions, unit.nanometer))

    def protonate(self, modeller: app.Modeller, frame: int | None = None) -> app.Modeller:
        """Hydrogens at the pH, in place (like ``Modeller.addHydrogens``); the first call fixes every
        residue's variant, later frames get the same atoms.  Returns ``modeller``."""
        with self.stages("hydrogens", frame):
            # every frame gets the first frame's variants (one System): HIS tautomers follow H-bonds otherwise
            self.variants = add_hydrogens(modeller, self.hydrogen_forcefield, self.options.ph, self.variants,
                                          self.platform)
        if self.topology is None:
            self.topology = modeller.topology
            # particle index of every heavy atom of the backmapped trajectory, for the restraint
            particle = {(a.residue.index, a.name): a.index for a in self.topology.atoms()}
            self.heavy_particles = np.array([particle[(a.residue.index, a.name)]
                                             for a in self.prepared.topology.atoms()])
        elif modeller.topology.getNumAtoms() != self.topology.getNumAtoms():
            raise RuntimeError("protonation changed between frames")  # variants are fixed: cannot happen
        return modeller

    def create_simulation(self, modeller: app.Modeller, frame: int = 0) -> app.Simulation:
        """The force field's System (solute; implicit solvent or vacuum) with the stereo and
        backbone guards and frame ``frame``'s bead restraint, in a Simulation at the modeller's
        positions.  Frames after the first reuse the first frame's Simulation with this frame's
        restraint targets (one System for a trajectory)."""
        # the peptide guard keeps each X-Pro bond the isomer this frame has (frame 0's isomer held
        # a later frame's other isomer at 10-30k kJ/mol/nm against the force field)
        self.omega_reference = np.asarray(modeller.positions.value_in_unit(unit.nanometer))
        if self._simulation is not None:
            with self.stages("restraint", frame):
                self._set_restraint_targets(self._simulation, frame)
            if self.periodic:  # this frame's cell (an NPT run's changes from frame to frame)
                self._simulation.context.setPeriodicBoxVectors(*reduced_box(self.bm.box[frame]))
            self._simulation.context.setPositions(modeller.positions)
            return self._simulation
        # (a solute that will be solvated in the CG box is refined in that box too)
        if self.periodic:
            self.topology.setPeriodicBoxVectors(reduced_box(self.bm.box[0]))
        with self.stages("system", frame):
            _, simulation = build_simulation(
                self.topology, modeller.positions, self.forcefield, self.solute_solvent, self.platform,
                self._restraint(frame), constraints=None, temperature=self.options.temperature,
                periodic=self.periodic)
        self._simulation = simulation
        return simulation

    def minimize(self, simulation: app.Simulation, frame: int | None = None) -> dict:
        """The staged L-BFGS of :func:`~openmm_herobm.pipeline.minimize.minimize` to the tolerance;
        returns its summary (passes, RMS and largest force)."""
        with self.stages("minimize", frame, energy=lambda: potential(simulation)) as step:
            with reporting(step.progress):
                info = minimize(simulation, self.options.tolerance,
                                restraint_parameter=PARAMETER if self.options.restraint_k > 0 else None)
            step.detail = f"RMS force {info['rms_force']:.0f} kJ/mol/nm"
        self._report["minimize"] = info
        return info

    def solvate(self, simulation: app.Simulation, frame: int = 0) -> app.Simulation:
        """Water and ions around the refined solute of ``simulation`` (:meth:`_add_solvent`), the
        water relaxed around the held solute (:func:`relax_solvent`); a new Simulation (flexible
        water: rigid water means constraints, and OpenMM's minimiser is ~100x slower with them)."""
        with self.stages("solvate", frame, energy=lambda: potential(solvated)) as step:
            positions = simulation.context.getState(getPositions=True).getPositions()
            modeller = app.Modeller(self.topology, positions)
            self._add_solvent(modeller)
            topology = modeller.topology
            hold = solute_hold_force(positions, self.topology.getNumAtoms())
            _, solvated = build_simulation(topology, modeller.positions, self.solvated_forcefield, "explicit",
                                           self.platform, self._restraint(frame) + [hold], constraints=None,
                                           temperature=self.options.temperature, rigid_water=False)
            info = {"n_atoms": topology.getNumAtoms(), "n_waters": sum(r.name == "HOH" for r in topology.residues())}
            with reporting(step.progress):
                info.update(relax_solvent(solvated, self.options.tolerance, SOLVENT_ITERATIONS, HOLD_PARAMETER,
                                          HOLD_K))
            step.detail = f"{info['n_atoms']} atoms, {info['n_waters']} waters"
        self._report["n_atoms_solvated"] = info["n_atoms"]
        self._report["minimize_solvent"] = info
        return solvated

    def equilibrate(self, simulation: app.Simulation, frame: int = 0, picoseconds=None) -> app.Simulation:
        """NVT from 50 K to the temperature with the bead restraint, then without it, for
        ``picoseconds`` (default: the pipeline's ``equilibrate``), in a new Simulation with HBonds
        constraints (dynamics needs them; minimisation ran unconstrained: much faster)."""
        picoseconds = value_in(picoseconds, PICOSECOND, "picoseconds") or self.options.equilibrate_ps
        options = self.options
        with self.stages("equilibrate", frame, energy=lambda: potential(dynamics)) as step, reporting(step.progress):
            forcefield = self.solvated_forcefield if self.explicit else self.forcefield
            state = simulation.context.getState(getPositions=True)
            _, dynamics = build_simulation(simulation.topology, state.getPositions(), forcefield, options.solvent,
                                           self.platform, self._restraint(frame), constraints=app.HBonds,
                                           temperature=options.temperature, periodic=self.periodic)
            equilibrate(dynamics, picoseconds, options.temperature, PARAMETER if options.restraint_k > 0 else None)
        return dynamics

    def run(self, frame: int = 0) -> SimulationResult:
        """Every stage for one frame: prepare_topology -> protonate -> create_simulation ->
        minimize -> (solvate) -> (equilibrate).  The result's report and timings are this frame's."""
        self._report = {}
        self.stages.timings = dict(self._setup_timings) if self._simulation is None else {}
        options, energies = self.options, {}
        simulation = self.create_simulation(self.protonate(self.prepare_topology(frame), frame), frame)
        self._report["n_atoms"] = self.topology.getNumAtoms()
        energies["initial"] = potential(simulation)
        if options.minimize:
            self.minimize(simulation, frame)
            energies["minimized"] = potential(simulation)
        if self.explicit:
            simulation = self.solvate(simulation, frame)
            energies["solvated"] = potential(simulation)
        if options.equilibrate_ps:
            simulation = self.equilibrate(simulation, frame)
            energies["equilibrated"] = potential(simulation)
        # this frame's state, taken now: later frames reuse the same Simulation
        state = simulation.context.getState(getPositions=True, getVelocities=True, getEnergy=True)
        return SimulationResult(simulation.topology, state.getPositions(), simulation.system, simulation, energies,
                                dict(self.stages.timings), {**self.info, **self._report},
                                residue_source=self.prepared.source_residue, state=state,
                                variants=list(self.variants))

    # -- helpers -------------------------------------------------------------------------
    def _add_solvent(self, modeller: app.Modeller) -> None:
        """Explicit water and ions: in the CG box when the input had one (its W beads and ions are
        rebuilt, at the CG salt concentration), else a 1 nm padded box; neutralised either way.
        No water or ion is left inside a lipid bilayer's hydrophobic core."""
        solvent = self.bm.solvent
        forcefield = self.solvated_forcefield
        templates = named_templates(forcefield, modeller.topology)
        if self.bm.box is None:
            with seeded_python_random():  # Modeller picks the waters it turns into ions at random
                modeller.addSolvent(forcefield, padding=1.0 * unit.nanometer, neutralize=True,
                                    residueTemplates=templates)
            return
        waters = WATERS_PER_BEAD * sum(n for name, n in solvent.items() if name in WATER_BEADS)
        pairs = min(solvent.get("NA", 0), solvent.get("CL", 0))
        molar = 55.5 * pairs / waters if waters else 0.0
        box = self.bm.box[0]
        with seeded_python_random():
            modeller.addSolvent(forcefield, boxVectors=reduced_box(box),
                                neutralize=True, ionicStrength=molar * unit.molar, residueTemplates=templates)
        self._report["solvent_rebuilt"] = {"cg_beads": dict(solvent), "ionic_strength_M": round(molar, 4),
                                          "box_nm": np.round(np.diag(box), 3).tolist()}
        core = clear_bilayer_core(modeller)
        if core is not None:
            self._report["solvent_rebuilt"]["bilayer_core_nm"] = core

    def _restraint(self, frame: int) -> list:
        # stereo centres may not be pushed through their plane, nor trans peptides flipped to
        # cis, by the minimiser (flat-bottom guards, zero for a sane structure)
        forces = [chirality_restraint_force(self.topology),
                  peptide_restraint_force(self.topology, self.omega_reference)] + molecule_stereo_force(self.topology)
        if self.options.backbone_guard:
            # the fitted start is Ramachandran-sound: phi/psi may relax, not leave their region
            forces.append(ramachandran_force(self.topology))
        if self.options.restraint_k <= 0:
            return forces
        # heavy atom j of the backmapped trajectory sits at particle heavy_particles[inverse[j]]
        # (-1: its residue was left out; the beads it weighs in are not restrained)
        inverse = np.full(self.bm.trajectory.n_atoms, -1, np.int64)
        inverse[self.source] = np.arange(len(self.source))
        particles = np.where(inverse >= 0, self.heavy_particles[np.clip(inverse, 0, None)], -1)
        tolerance = self.flat_bottom[frame] + self.options.restraint_tolerance * self.margin[frame]
        return forces + [bead_restraint_force(self.bm.weights, particles, self.beads[frame],
                                              self.options.restraint_k, tolerance)]

    def _set_restraint_targets(self, simulation: app.Simulation, frame: int) -> None:
        # a new frame has new bead targets: rebuild the context's restraint force
        for i in reversed(range(simulation.system.getNumForces())):
            if simulation.system.getForce(i).getName() in PIPELINE_FORCES:
                simulation.system.removeForce(i)
        for force in self._restraint(frame):
            simulation.system.addForce(force)
        simulation.context.reinitialize()



def _check_restraint_target(value) -> None:
    if value not in RESTRAINT_TARGETS:
        raise HeroBMError(f"restraint_target {value!r}: use 'sound' or 'input'")


def reduced_box(box: np.ndarray) -> unit.Quantity:
    """The unit cell ``box`` (rows a, b, c in nm) in the reduced form OpenMM requires (a < 2|b_x| ...):
    a GROMACS rhombic dodecahedron is on that limit, which float32 rounding can cross.  The same
    lattice (an orthorhombic box comes back exactly as it was)."""
    from openmm.app.internal.unitcell import computePeriodicBoxVectors

    box = np.asarray(box, np.float64)
    lengths = np.linalg.norm(box, axis=1)
    a, b, c = box
    angles = np.arccos([b @ c / (lengths[1] * lengths[2]), a @ c / (lengths[0] * lengths[2]),
                        a @ b / (lengths[0] * lengths[1])])
    return computePeriodicBoxVectors(*lengths, *angles)


def _check_box(box: np.ndarray, source: str = "") -> None:
    """A periodic refinement needs a box at least twice the cutoff wide (OpenMM's rule), else one line."""
    widths = np.diag(reduced_box(box).value_in_unit(unit.nanometer))  # the heights of the cell
    if widths.min() < 2 * CUTOFF_NM:
        where = f"{source}: " if source else ""
        raise HeroBMError(f"{where}the CG input's periodic box ({' x '.join(f'{w:.2f}' for w in widths)} nm) is "
                          f"narrower than twice the {CUTOFF_NM:g} nm cutoff of the refinement; give the input its "
                          f"simulation box, or none (a PDB without CRYST1) to refine it without periodic images")


def backmap_and_simulate(cg, model=None, *, trajectory=None, ph: float = 7.0,
                         forcefield: str | list[str] | app.ForceField | None = None, minimize: bool = True,
                         tolerance=500.0, equilibrate=None, temperature=300.0,
                         solvent: str | None = "implicit", platform: str | mm.Platform | None = None,
                         restraint_k=1.0e5, optimize_backbone: bool | None = None, output: str | Path | None = None,
                         trajectory_output: str | Path | None = None, unmapped: str = "fail",
                         progress: bool = False, fit: bool = True, side_chains: str | bool = "rotamers",
                         deformation: bool = True, restraint_tolerance=None, restraint_target: str = "sound",
                         variants: list | None = None, all_frames: bool | None = None, aliases=None,
                         reporters: list | None = None) -> SimulationResult:
    """Backmap a CG structure with a HEroBM model and refine it into a ready-to-run OpenMM system.

    ``cg``: a structure file (PDB, mmCIF, GRO), an mdtraj Trajectory, or ``(topology, positions)``
    as for ``openmm.app.Modeller``.  Every physical argument takes an ``openmm.unit`` quantity or
    a plain number in its documented unit: ``tolerance`` kJ/mol/nm, ``equilibrate`` ps,
    ``temperature`` K, ``restraint_k`` kJ/mol/nm^2 (strength of the bead restraint TorchForce; 0
    disables it), ``restraint_tolerance`` nm.  ``forcefield``: file name(s) or an
    ``openmm.app.ForceField`` (used as given: it must hold the solvent model asked for);
    ``platform``: a name or an ``openmm.Platform``.  ``output`` (PDB/mmCIF) receives the final
    structure of frame 0, and beside it ``<stem>.system.xml``, ``<stem>.state.xml`` and
    ``<stem>.report.json`` (written by a :class:`JSONReporter`); ``trajectory_output`` (DCD/XTC)
    every refined frame of ``trajectory``.
    ``fit``, ``side_chains`` and ``deformation`` are :func:`~openmm_herobm.backmap`'s (the
    geometry-first fit, real rotamers, the CG-simulation deformation undone).  The bead
    restraint holds each mapped bead within ``restraint_tolerance`` (flat bottom) of its
    target on a CG simulation frame (no real structure meets such beads exactly; the width is
    scaled by how simulation-like the frame is, so mapped beads are held exactly).
    ``restraint_target='input'`` restrains the input beads themselves instead (harmonic beyond
    ``restraint_tolerance``, which then defaults to 0): closer to the CG frame (0.31 A RMS at
    the default ``restraint_k`` on real frames, against 0.73) at the price of bent bonds, angles
    and peptide planes (BENCHMARKS.md, "bead fidelity frontier"); for workflows that need the CG
    frame met.
    ``optimize_backbone`` (the CA-fixed backbone optimisation before hydrogens): None = only
    when ``fit`` is False; the fit already optimises the backbone, with its beads, and
    running both moved ubiquitin's backbone from 0.17 to 0.30 A RMSD.
    ``all_frames``: refine every frame of the input into ``result.frames`` (default: when
    ``trajectory_output`` is given; else frame 0 only).
    ``variants``: the protonation variant of every residue (``result.variants`` of an earlier run of
    the same input: frames refined in separate runs then have the same atoms).
    A CG input with a unit cell (CRYST1, GRO box; at least 2 nm wide) is refined in that cell in
    every ``solvent`` mode, with periodic images, and the result keeps it.  Free amino acids
    (residues bonded to no neighbour) are refined where the force field has templates for them
    (CHARMM36, the default when nothing else is there), else left out with a warning.
    ``aliases``: CG residue names to read as known molecules (:func:`~openmm_herobm.backmap`'s).
    ``reporters``: told when each stage of each frame starts and ends (:class:`ProgressReporter`
    writes lines to stderr; ``progress=True`` adds one).  The stages are :class:`Pipeline`'s, for
    calling one by one.
    The same input, options, platform and thread count give the same coordinates (seeded
    dynamics; OpenMM's CPU and Reference platforms sum forces in a fixed order).
    """
    from ..backmapping import backmap
    from ..evaluation import evaluate
    from ..io import check_output_path, check_outputs, load_input, output_files, save_trajectory

    if output is not None:
        check_output_path(output, "structure")
    if trajectory_output is not None:
        check_output_path(trajectory_output, "trajectory")
    check_outputs(output_paths(output, trajectory_output), [cg, trajectory])
    if solvent == "explicit" and (trajectory_output is not None or all_frames):
        raise HeroBMError("explicit solvent is for preparing one structure; refine trajectories in 'implicit' "
                          "or vacuum (solvent=None), then solvate the frame you want to simulate")
    _check_restraint_target(restraint_target)
    reporters = list(reporters or [])
    if progress and not any(isinstance(r, ProgressReporter) for r in reporters):
        reporters.append(ProgressReporter())
    # the report file's stages: collected like any reporter's, written with the other outputs
    report = JSONReporter(Path(str(Path(output).with_suffix("")) + ".report.json")) if output is not None else None
    everyone = reporters + ([] if report is None else [report])
    stages = Stages(everyone)
    cg_traj, source = load_input(cg, trajectory)
    if cg_traj.unitcell_vectors is not None:  # refined in its box (Pipeline): checked before the model runs
        _check_box(cg_traj.unitcell_vectors[0], source)
    with stages("model") as step, reporting(step.progress):  # frame by frame on a long trajectory
        bm = backmap(cg_traj, model, unmapped=unmapped, fit=fit, side_chains=side_chains, deformation=deformation,
                     aliases=aliases)
    if bm.solvent and solvent != "explicit":
        listing = ", ".join(f"{n} x{c}" for n, c in sorted(bm.solvent.items()))
        warnings.warn(f"CG solvent not rebuilt ({listing}): it is rebuilt with solvent='explicit' "
                      f"(--solvent explicit), in the CG box", stacklevel=2)
    pipeline = Pipeline(bm, ph=ph, forcefield=forcefield, solvent=solvent, platform=platform,
                        temperature=temperature, tolerance=tolerance, restraint_k=restraint_k,
                        restraint_tolerance=restraint_tolerance if restraint_tolerance is not None
                        else RESTRAINT_TOLERANCE if restraint_target == "sound" else 0.0,
                        restraint_target=restraint_target,
                        optimize_backbone=(not fit) if optimize_backbone is None else optimize_backbone,
                        backbone_guard=fit, minimize=minimize, equilibrate=equilibrate, variants=variants,
                        reporters=everyone, source=source)
    result = pipeline.run(0)
    totals = {**result.timings, **stages.timings}
    frames = [np.asarray(result.positions.value_in_unit(unit.nanometer))]
    boxes = [result.state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer)]
    if (trajectory_output is not None if all_frames is None else all_frames) and bm.trajectory.n_frames > 1:
        for f in range(1, bm.trajectory.n_frames):
            frame = pipeline.run(f)
            frames.append(np.asarray(frame.positions.value_in_unit(unit.nanometer)))
            boxes.append(frame.state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))
            for key, seconds in frame.timings.items():
                totals[key] = totals.get(key, 0.0) + seconds
    result.timings = totals  # summed over frames
    geometry = evaluate(result.trajectory)
    result.report.update({k: v for k, v in geometry.items() if k in (
        "n_clashes", "n_close_contacts", "cis_peptides_nonpro", "cis_peptides_pro", "n_bonds_out_of_range",
        "n_pierced_rings") or k.startswith(("chirality_errors_", "double_bond_errors_")) and not isinstance(v, dict)})
    result.frames = np.array(frames, dtype=np.float32)
    result.report.update(energies_kj_mol=result.energies, timings_s=result.timings, n_frames=len(frames))
    with output_files() as files:  # all put in place together: never a mix of two runs
        if output is not None:
            result.written = _write_outputs(result, Path(output), files, report)
        if trajectory_output is not None:
            traj = mdtraj.Trajectory(result.frames, mdtraj.Topology.from_openmm(result.topology))
            if result.topology.getPeriodicBoxVectors() is not None:  # every frame keeps its cell
                traj.unitcell_vectors = np.asarray(boxes, np.float32)
            save_trajectory(traj, trajectory_output, files=files)
            result.written.append(str(trajectory_output))
    Stages(reporters).finish(result)  # the caller's reporters (the report file is written above)
    return result


COMPANIONS = (".system.xml", ".state.xml", ".report.json")  # written beside ``output``, from its stem


def output_paths(output=None, trajectory_output=None) -> list[str]:
    """Every file :func:`backmap_and_simulate` writes for these arguments (for checks before work)."""
    paths = [] if output is None else [str(output)] + [str(Path(output).with_suffix("")) + s for s in COMPANIONS]
    return paths + ([] if trajectory_output is None else [str(trajectory_output)])


def without_restraint(system: mm.System) -> mm.System:
    """A copy of ``system`` without the bead restraint, for production runs (no openmm-torch needed)."""
    copy = mm.System()
    for i in range(system.getNumParticles()):
        copy.addParticle(system.getParticleMass(i))
    for i in range(system.getNumConstraints()):
        copy.addConstraint(*system.getConstraintParameters(i))
    copy.setDefaultPeriodicBoxVectors(*system.getDefaultPeriodicBoxVectors())
    for i in range(system.getNumForces()):
        force = system.getForce(i)
        if force.getName() not in PIPELINE_FORCES:
            copy.addForce(mm.XmlSerializer.deserialize(mm.XmlSerializer.serialize(force)))
    return copy


def _write_outputs(result: SimulationResult, output: Path, files, report: JSONReporter) -> list[str]:
    written = []
    from ..io import save_openmm_structure

    save_openmm_structure(result.topology, result.positions, output, files=files)
    written.append(str(output))
    stem = output.with_suffix("")
    for suffix, text in zip(COMPANIONS, (mm.XmlSerializer.serialize(without_restraint(result.system)),
                                         mm.XmlSerializer.serialize(result.state),
                                         json.dumps(report.document(result), indent=2, default=float) + "\n")):
        path = Path(str(stem) + suffix)
        with files.file(path) as tmp:
            Path(tmp).write_text(text)
        written.append(str(path))
    return written

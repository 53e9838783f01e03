"""Serial resolution switching of one simulation: a Martini 3 frame -> an all-atom Simulation
(HEroBM + the OpenMM pipeline) and back (forward mapping + a Martini System).

Both directions return a new ``openmm.app.Simulation`` ready to ``step()``: positions relaxed
(the all-atom side by the pipeline's staged minimisation, the CG side by a short L-BFGS) and
velocities drawn from Maxwell-Boltzmann at the temperature, so the first steps start at
equilibrium kinetic energy.
"""

from __future__ import annotations

import mdtraj
import numpy as np
import openmm as mm
from openmm import app, unit

from ..backmapping import backmap
from ..chemistry import SOLVENT_RESIDUES, standard_residue
from ..errors import HeroBMError
from ..evaluation import evaluate
from ..mapping import map_structure
from ..martini import MartiniTopFile
from ..pipeline import Pipeline, build_simulation, choose_platform
from ..units import KELVIN, PICOSECOND, value_in

#: seed of the velocities and Langevin noise when none is given (OpenMM's 0 would be a new one each run)
SEED = 16


def cg_positions(simulation: app.Simulation) -> np.ndarray:
    """The current bead positions (beads, 3) nm of a Simulation, virtual sites built."""
    simulation.context.computeVirtualSites()
    return simulation.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)


def _solute(topology: app.Topology, positions: np.ndarray) -> tuple[app.Topology, np.ndarray]:
    """The topology and positions without solvent beads (water, ions): HEroBM backmaps the solute."""
    keep = [a.index for a in topology.atoms() if a.residue.name not in SOLVENT_RESIDUES]
    if not keep:
        raise HeroBMError("the CG simulation holds only solvent beads: nothing to backmap")
    modeller = app.Modeller(topology, positions * unit.nanometer)
    modeller.delete([a for a in modeller.topology.atoms() if a.index not in set(keep)])
    return modeller.topology, positions[keep]


def to_all_atom(cg_simulation: app.Simulation, *, model=None, temperature=300.0, solvent: str | None = "implicit",
                forcefield=None, equilibrate=None, platform=None, friction=1.0, seed: int = SEED,
                reporters=()) -> app.Simulation:
    """An all-atom Simulation of the solute of ``cg_simulation``'s current frame.

    The beads (solvent beads left out) are backmapped by HEroBM (``model``: as
    :func:`~openmm_herobm.backmap`), refined by :class:`~openmm_herobm.Pipeline` (``solvent``:
    None = vacuum or ``'implicit'`` OBC2; ``forcefield``: the pipeline's default, Amber14 for
    proteins; ``equilibrate`` ps with the bead restraint released halfway, default none) and put in
    a new production System without the pipeline's restraint and guards: HBonds constraints,
    1 nm cut-off, ``LangevinMiddleIntegrator`` at ``temperature`` (K), ``friction`` (1/ps), 2 fs,
    velocities drawn at ``temperature`` with ``seed``.  The pipeline's report with the geometry
    checks (``chirality_errors_*``, ``cis_peptides_*``, clashes) and energies is
    ``simulation.herobm_report`` (a dict).
    """
    temperature = value_in(temperature, KELVIN, "temperature")
    topology, x = _solute(cg_simulation.topology, cg_positions(cg_simulation))
    if solvent == "explicit":
        raise HeroBMError("to_all_atom: solvent 'explicit' is not supported yet; use None or 'implicit'")
    bm = backmap((topology, x * unit.nanometer), model)
    pipeline = Pipeline(bm, solvent=solvent, forcefield=forcefield, platform=platform, temperature=temperature,
                        equilibrate=equilibrate, reporters=reporters)
    result = pipeline.run(0)
    _, simulation = build_simulation(result.topology, result.positions, pipeline.forcefield, solvent,
                                     pipeline.platform, constraints=app.HBonds, temperature=temperature,
                                     periodic=False)
    simulation.integrator.setFriction(value_in(friction, 1 / PICOSECOND, "friction"))
    simulation.integrator.setRandomNumberSeed(seed)
    simulation.context.applyConstraints(1e-6)
    simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    geometry = evaluate(result.trajectory)  # as backmap_and_simulate reports it
    checks = {k: v for k, v in geometry.items() if k in ("n_clashes", "cis_peptides_nonpro", "cis_peptides_pro",
                                                          "n_bonds_out_of_range") or k.startswith("chirality_errors_")}
    simulation.herobm_report = dict(result.report, **checks, energies_kj_mol=result.energies,
                                    timings_s=result.timings)
    return simulation


def _bead_order(martini: app.Topology, cg: mdtraj.Topology) -> np.ndarray:
    """Index into ``cg`` (forward-mapped beads) of each particle of ``martini``, matched residue by
    residue in order (names checked) and by bead name within a residue."""
    cg_residues = [r for r in cg.residues]
    mres = list(martini.residues())
    if len(mres) != len(cg_residues):
        raise HeroBMError(f"the Martini topology has {len(mres)} residues, the mapped all-atom frame "
                          f"{len(cg_residues)}; give a topology of the solute alone")
    order = []
    for mr, cr in zip(mres, cg_residues):
        beads = {a.name: a.index for a in cr.atoms}
        if mr.name[:3] != cr.name[:3] and standard_residue(mr.name) != standard_residue(cr.name):  # HSD ~ HIE
            raise HeroBMError(f"residue {mr.index + 1}: {mr.name} in the Martini topology, {cr.name} mapped")
        for atom in mr.atoms():
            if atom.name not in beads:
                raise HeroBMError(f"bead {atom.name} of {mr.name}{mr.index + 1} is not in the forward mapping "
                                  f"(it has {', '.join(beads)})")
            order.append(beads[atom.name])
    return np.array(order)


def to_coarse_grained(aa_simulation: app.Simulation, martini, *, temperature=300.0, mapping="martini3",
                      step_size=0.02, friction=5.0, minimize: bool = True, platform=None, seed: int = SEED,
                      **create) -> app.Simulation:
    """A Martini 3 Simulation of ``aa_simulation``'s current frame.

    ``martini``: a :class:`~openmm_herobm.martini.MartiniTopFile` (or a ``.top`` path) of the same
    molecule(s), martinize2's bead order, without solvent.  The all-atom positions are mapped with
    ``mapping`` (:func:`~openmm_herobm.map_structure`), placed on the topology's beads (virtual
    sites rebuilt, constraints applied), relaxed by a short minimisation (``minimize``: a forward-
    mapped frame has bonds of mapped, not Martini, length) and given velocities at ``temperature``
    (K); the integrator is ``LangevinMiddleIntegrator(temperature, friction 1/ps, step_size ps)``.
    ``create``: passed to ``MartiniTopFile.createSystem``.
    """
    temperature = value_in(temperature, KELVIN, "temperature")
    top = martini if isinstance(martini, MartiniTopFile) else MartiniTopFile(martini)
    state = aa_simulation.context.getState(getPositions=True)
    xyz = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    traj = mdtraj.Trajectory(xyz[None], mdtraj.Topology.from_openmm(aa_simulation.topology))
    cg = map_structure(traj, mapping).cg
    order = _bead_order(top.topology, cg.topology)
    system = top.createSystem(**create)
    integrator = mm.LangevinMiddleIntegrator(temperature * unit.kelvin, value_in(friction, 1 / PICOSECOND, "friction")
                                            / unit.picosecond, value_in(step_size, PICOSECOND, "step_size")
                                            * unit.picosecond)
    integrator.setRandomNumberSeed(seed)
    args = () if platform is None else (choose_platform(platform),)
    simulation = app.Simulation(top.topology, system, integrator, *args)
    simulation.context.setPositions(cg.xyz[0][order] * unit.nanometer)
    simulation.context.computeVirtualSites()
    simulation.context.applyConstraints(1e-6)
    if minimize:
        simulation.minimizeEnergy(maxIterations=200)
    simulation.context.setVelocitiesToTemperature(temperature * unit.kelvin, seed)
    return simulation

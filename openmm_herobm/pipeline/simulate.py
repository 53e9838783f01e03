"""``backmap_and_simulate``: CG input -> simulation-ready all-atom system, in one call.

Stages (each timed): model (heavy atoms, TorchScript) -> topology -> backbone optimisation
-> hydrogens at a pH -> force field (+ solvent) with the bead restraint (openmm-torch) ->
L-BFGS minimisation -> optional equilibration -> outputs (PDB/mmCIF, System and State XML,
JSON report).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import mdtraj
import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

from .backbone import optimise_backbone
from .refine import (add_hydrogens, build_simulation, choose_platform, equilibrate, load_forcefield, minimize,
                     potential, timed)
from .restraint import PARAMETER, bead_restraint_force
from .topology import prepare_topology


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

    @property
    def heavy_trajectory(self) -> mdtraj.Trajectory:
        """The final structure as an mdtraj Trajectory (all atoms, nm)."""
        xyz = np.asarray(self.positions.value_in_unit(unit.nanometer), dtype=np.float32)[None]
        return mdtraj.Trajectory(xyz, mdtraj.Topology.from_openmm(self.topology))


def residue_phi_psi(backmapped, frame: int = 0) -> np.ndarray:
    """Predicted (phi, psi) per residue (radians) from the BB beads' dihedral outputs."""
    system = backmapped.system
    dih = backmapped.dihedrals[frame]
    out = np.full((len(system.residues), 2), np.nan)
    for r, res in enumerate(system.residues):
        if "BB" in res.mapping.beads:
            d = dih[res.beads[res.mapping.beads.index("BB")]]
            out[r] = np.arctan2(d[0], d[1]), np.arctan2(d[2], d[3])
    return out


def backmap_and_simulate(cg, model=None, *, ph: float = 7.0, forcefield: str | list[str] = "amber14-all.xml",
                         minimize_structure: bool = True, tolerance: float = 500.0, equilibrate_ps: float | None = None,
                         temperature: float = 300.0, solvent: str | None = "implicit", platform: str | None = None,
                         restraint_k: float = 1000.0, optimize_backbone: bool = True, frame: int = 0,
                         output: str | Path | None = None, unmapped: str = "fail") -> SimulationResult:
    """Backmap a CG structure with a HEroBM model and refine it into a ready-to-run OpenMM system.

    ``restraint_k`` (kJ/mol/nm^2) keeps each mapped bead of the refined heavy atoms on its
    CG input position (0 disables the TorchForce).  ``output``: a PDB/mmCIF path; beside it
    go ``<stem>.system.xml``, ``<stem>.state.xml`` and ``<stem>.report.json``.
    """
    from ..backmapping import backmap
    from ..evaluation import evaluate
    from ..io import atomic_output, check_output_path

    if output is not None:
        check_output_path(output, "structure")
    timings: dict = {}
    energies: dict = {}
    with timed(timings, "model"):
        bm = backmap(cg, model, unmapped=unmapped)
    heavy = bm.trajectory.slice([frame], copy=False)
    with timed(timings, "topology"):
        prepared = prepare_topology(heavy)
    positions = prepared.positions.value_in_unit(unit.nanometer)
    platform_obj = choose_platform(platform)
    report: dict = {"n_chain_breaks": prepared.n_breaks, "n_disulfides": prepared.n_disulfides,
                    "platform": platform_obj.getName()}
    if optimize_backbone:
        with timed(timings, "backbone"):
            phi_psi = residue_phi_psi(bm, frame)
            result = optimise_backbone(prepared.topology, positions, phi_psi)
            positions = result.positions
            report["omega_fixed"] = result.n_omega_fixed
    with timed(timings, "hydrogens"):
        ff = load_forcefield(forcefield, solvent)
        modeller = app.Modeller(prepared.topology, unit.Quantity(positions, unit.nanometer))
        add_hydrogens(modeller, ff, ph, prepared.variants)
        if solvent == "explicit":
            modeller.addSolvent(ff, padding=1.0 * unit.nanometer, neutralize=True)
    def restraint():  # a fresh TorchForce per System (a System owns its forces)
        return [] if restraint_k <= 0 else [bead_restraint_force(bm.system.weights, atom_index, targets, restraint_k)]

    atom_index = targets = None
    if restraint_k > 0:
        particle = {(a.residue.index, a.name): a.index for a in modeller.topology.atoms()}
        residue_of = {}
        for res_i, res in enumerate(prepared.topology.residues()):
            for a in res.atoms():
                residue_of[prepared.source_atom[a.index]] = (res_i, a.name)
        atom_index = np.array([particle[residue_of[j]] for j in range(bm.system.n_atoms)])
        targets = _input_beads(cg, bm, frame)  # the CG input beads (nm)
    extra = restraint()
    with timed(timings, "system"):
        system, simulation = build_simulation(modeller.topology, modeller.positions, ff, solvent, platform_obj,
                                              extra, constraints=None, temperature=temperature)
    energies["initial"] = potential(simulation)
    if minimize_structure:
        with timed(timings, "minimize"):
            minimize(simulation, tolerance)
        energies["minimized"] = potential(simulation)
    positions_q = simulation.context.getState(getPositions=True).getPositions()
    if equilibrate_ps:
        with timed(timings, "equilibrate"):
            # dynamics: rebuild with HBonds constraints (minimisation ran unconstrained, it is faster)
            system, simulation = build_simulation(modeller.topology, positions_q, ff, solvent, platform_obj,
                                                  restraint(),
                                                  constraints=app.HBonds, temperature=temperature)
            equilibrate(simulation, equilibrate_ps, temperature, PARAMETER if extra else None)
            positions_q = simulation.context.getState(getPositions=True).getPositions()
            energies["equilibrated"] = potential(simulation)
    final = SimulationResult(modeller.topology, positions_q, system, simulation, energies, timings, report)
    geometry = evaluate(final.heavy_trajectory)
    report.update({k: geometry[k] for k in ("n_clashes", "n_close_contacts", "chirality_errors_ca",
                                            "chirality_errors_ile_cb", "chirality_errors_thr_cb",
                                            "cis_peptides_nonpro", "cis_peptides_pro", "n_bonds_out_of_range")
                   if k in geometry})
    report.update({"energies_kj_mol": energies, "timings_s": timings, "n_atoms": modeller.topology.getNumAtoms()})
    if output is not None:
        final.written = _write_outputs(final, Path(output), atomic_output)
    return final


def _input_beads(cg, bm, frame: int) -> np.ndarray:
    from ..io import load_structure, make_whole

    traj = cg if isinstance(cg, mdtraj.Trajectory) else load_structure(cg)
    traj = make_whole(traj)
    return traj.xyz[min(frame, traj.n_frames - 1), bm.system.cg_input_index].astype(np.float64)


def _write_outputs(result: SimulationResult, output: Path, atomic_output) -> list[str]:
    written = []
    with atomic_output(output) as tmp:
        with open(tmp, "w") as f:
            if output.suffix.lower() in (".cif", ".mmcif"):
                app.PDBxFile.writeFile(result.topology, result.positions, f, keepIds=True)
            else:
                app.PDBFile.writeFile(result.topology, result.positions, f, keepIds=True)
    written.append(str(output))
    stem = output.with_suffix("")
    state = result.simulation.context.getState(getPositions=True, getVelocities=True, getEnergy=True)
    for suffix, text in ((".system.xml", mm.XmlSerializer.serialize(result.system)),
                         (".state.xml", mm.XmlSerializer.serialize(state)),
                         (".report.json", json.dumps(result.report, indent=2, default=float) + "\n")):
        path = Path(str(stem) + suffix)
        with atomic_output(path) as tmp:
            Path(tmp).write_text(text)
        written.append(str(path))
    return written

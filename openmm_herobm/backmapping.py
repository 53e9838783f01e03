"""``openmm_herobm.backmap``: CG structure or trajectory -> all-atom heavy atoms with HEroBM models.

A whole CG simulation frame (proteins + lipids + water + ions) is split by molecule type:
each residue name goes to the model whose mapping knows it (``model=None``: the shipped
models, proteins first), the parts are backmapped separately and stacked into one
all-atom trajectory.  Martini water and ion beads (``SOLVENT_RESIDUES``) are not
backmapped: they are counted in ``BackmapResult.solvent`` and rebuilt by the OpenMM
pipeline (explicit solvent) or left out with a warning.  Molecules no model knows are
reported by name and count: ``unmapped='fail'`` stops, ``'drop'`` leaves them out.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import mdtraj
import numpy as np
import scipy.sparse
import torch

from .errors import HeroBMError
from .mapping import SystemMapping
from .model.deploy import LoadedModel, load_model, shipped_models
from .model.inference import predict_chunked
from .reconstruction.protein_fit import ProteinFit

#: Martini water and ion residue names (one W bead = 4 waters; ION residues hold NA/CL/... beads)
SOLVENT_RESIDUES = frozenset({"W", "SW", "TW", "PW", "WF", "SOL", "ION", "NA", "CL", "K", "CA2+", "NA+", "CL-"})


@dataclass
class BackmapPart:
    """The molecules of one model: its mapping of them and its predictions."""
    system: SystemMapping
    model: LoadedModel
    dihedrals: np.ndarray  # (frames, beads of this part, 4): predicted sin/cos phi, psi per bead
    bead_index: np.ndarray  # (beads of this part,) index of each bead in the input CG trajectory


@dataclass
class BackmapResult:
    trajectory: mdtraj.Trajectory  # all-atom (nm), the atoms the models reconstruct, part after part
    parts: list[BackmapPart]
    solvent: dict = field(default_factory=dict)  # CG solvent left to the pipeline: {"W": n, "NA": n, ...}
    box: np.ndarray | None = None  # (frames, 3, 3) nm, the CG unit cell
    written: list[str] = field(default_factory=list)

    # a single-model result reads like before: .system, .model, .dihedrals
    @property
    def system(self) -> SystemMapping:
        return self.parts[0].system

    @property
    def model(self) -> LoadedModel:
        return self.parts[0].model

    @property
    def dihedrals(self) -> np.ndarray:
        return self.parts[0].dihedrals if len(self.parts) == 1 else np.concatenate([p.dihedrals for p in self.parts], 1)

    @property
    def weights(self) -> scipy.sparse.csr_matrix:
        """Sparse (beads, atoms of ``trajectory``): bead positions = weights @ atom positions."""
        if len(self.parts) == 1:
            return self.parts[0].system.weights
        return scipy.sparse.block_diag([p.system.weights for p in self.parts], format="csr")

    @property
    def bead_index(self) -> np.ndarray:
        """Index in the input CG trajectory of every bead, in the row order of ``weights``."""
        return np.concatenate([p.bead_index for p in self.parts])

    def phi_psi(self, frame: int = 0) -> np.ndarray:
        """Predicted (phi, psi) per residue of ``trajectory`` (radians; NaN without a BB bead)."""
        out = []
        for part in self.parts:
            values = np.full((len(part.system.residues), 2), np.nan)
            dih = part.dihedrals[frame]
            for r, res in enumerate(part.system.residues):
                if "BB" in res.mapping.beads:
                    d = dih[res.beads[res.mapping.beads.index("BB")]]
                    values[r] = np.arctan2(d[0], d[1]), np.arctan2(d[2], d[3])
            out.append(values)
        return np.concatenate(out)

    def summary(self) -> str:
        atoms = self.trajectory.n_atoms
        beads = sum(p.system.n_beads for p in self.parts)
        residues = sum(len(p.system.residues) for p in self.parts)
        models = ", ".join(p.model.path.name for p in self.parts)
        return (f"backmapped {beads} beads in {residues} residues to {atoms} heavy atoms "
                f"({self.trajectory.n_frames} frame(s)) with {models}")


def assign_models(cg_topology: mdtraj.Topology, models: list | None = None) -> tuple[list, Counter]:
    """[(model, residue indices)] for the non-solvent residues some model knows, and the names no model knows.

    ``models`` (paths, names or LoadedModels) are tried in order; default: the shipped
    models, the one that knows most residue names of the input first.
    """
    loaded = [m if isinstance(m, LoadedModel) else load_model(m) for m in (models or shipped_models())]
    names = Counter(r.name for r in cg_topology.residues if r.name not in SOLVENT_RESIDUES)
    if models is None:
        loaded.sort(key=lambda m: -len(set(names) & set(m.metadata["molecules"])))
    owner = {}
    for name in names:
        owner[name] = next((m for m in loaded if name in m.metadata["molecules"]), None)
    plan: dict = {}  # position in `loaded` -> residue indices (LoadedModel is not hashable)
    for res in cg_topology.residues:
        model = owner.get(res.name)
        if model is not None:
            plan.setdefault(next(i for i, m in enumerate(loaded) if m is model), []).append(res.index)
    unknown = Counter({n: c for n, c in names.items() if owner[n] is None})
    return [(loaded[i], residues) for i, residues in sorted(plan.items())], unknown


def backmap(cg, model: str | Path | LoadedModel | list | None = None, *, trajectory: str | Path | None = None,
            output: str | Path | None = None, trajectory_output: str | Path | None = None,
            unmapped: str = "fail", chunk: float = 40.0, fit: bool = True, side_chains: bool = True) -> BackmapResult:
    """Reconstruct the heavy atoms of a CG structure (and optionally every frame of a trajectory).

    ``cg`` is a file path or an mdtraj Trajectory of beads (martinize2 / Martini 3 naming).
    Molecules are made whole first.  ``model``: a shipped model name or file (everything
    non-solvent must be known to it), a list of them (each residue name goes to the first
    that knows it), or None for the shipped models.  Outputs are written atomically.
    ``fit``: after the network, fit proteins to their beads and ideal geometry (backbone with
    the predicted phi/psi, then the side chains the beads determine;
    :mod:`openmm_herobm.reconstruction.protein_fit`); False keeps the raw network output.
    ``side_chains``: with ``fit``, mix in the side chains of the model's side-chain library
    (:mod:`openmm_herobm.reconstruction.side_chain_library`) where the model file has one.
    """
    from .io import check_output_path, load_input, write_outputs

    if unmapped not in ("fail", "drop"):
        raise HeroBMError(f"unmapped must be 'fail' or 'drop', not {unmapped!r}")
    if output is not None:
        check_output_path(output, "structure")
    if trajectory_output is not None:
        check_output_path(trajectory_output, "trajectory")
    traj, source = load_input(cg, trajectory)
    top = traj.topology
    models = None if model is None else (list(model) if isinstance(model, (list, tuple)) else [model])
    plan, unknown = assign_models(top, models)
    if unknown:
        listing = ", ".join(f"{n} x{c}" for n, c in unknown.most_common())
        where = f"{source}: " if source else ""
        if unmapped == "fail" or not plan:
            raise HeroBMError(f"{where}no model knows these molecules: {listing}; pass a --model that does, "
                              "or --unmapped drop to leave them out")
        warnings.warn(f"{where}left out, no model knows them: {listing}", stacklevel=2)
    solvent = Counter()
    for res in top.residues:
        if res.name in SOLVENT_RESIDUES:
            for atom in res.atoms:  # ION residues: count NA / CL beads; water: W beads
                solvent[atom.name if res.name == "ION" else res.name] += 1

    parts, frames = [], []
    for loaded, residues in plan:
        beads = np.array([a.index for r in residues for a in top.residue(r).atoms], np.int64)
        sub = traj.atom_slice(beads) if len(beads) < traj.n_atoms else traj
        system = SystemMapping.from_cg(sub.topology, loaded.mapping_set, unmapped="fail", source=source)
        xyz, dihedrals = _predict(loaded, system, sub, chunk, fit, side_chains)
        parts.append(BackmapPart(system, loaded, dihedrals, beads[system.cg_input_index]))
        frames.append(mdtraj.Trajectory(xyz, system.aa_topology, time=traj.time))
    out = frames[0]
    for more in frames[1:]:
        out = out.stack(more)
    if traj.unitcell_vectors is not None:
        out.unitcell_vectors = traj.unitcell_vectors
    box = None if traj.unitcell_vectors is None else traj.unitcell_vectors.astype(np.float64)
    return BackmapResult(out, parts, dict(solvent), box, write_outputs(out, output, trajectory_output))


def _predict(loaded: LoadedModel, system: SystemMapping, traj: mdtraj.Trajectory, chunk: float,
             fit: bool = True, side_chains: bool = True):
    bead_type = torch.as_tensor(system.bead_types)
    slot_atom = torch.as_tensor(np.where(system.slot_valid, system.slot_atom, -1))
    xyz = np.empty((traj.n_frames, system.n_atoms, 3), np.float32)
    dihedrals = np.empty((traj.n_frames, system.n_beads, 4), np.float32)
    fitter = ProteinFit(system, loaded.side_chains if side_chains else None) if fit else None
    with torch.no_grad():
        for f in range(traj.n_frames):
            pos = torch.as_tensor(traj.xyz[f, system.cg_input_index] * 10.0, dtype=torch.float32)
            vectors, dih = predict_chunked(loaded.module, pos, bead_type, loaded.cutoff, chunk=chunk)
            atoms = loaded.module.reconstruct(pos, bead_type, vectors, slot_atom, system.n_atoms).numpy()
            if fitter is not None and not fitter.empty:
                atoms = fitter(atoms, pos.numpy(), dih.numpy())
            xyz[f] = atoms / 10.0
            dihedrals[f] = dih.numpy()
    return xyz, dihedrals

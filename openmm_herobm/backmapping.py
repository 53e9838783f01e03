"""``openmm_herobm.backmap``: CG structure or trajectory -> all-atom heavy atoms with a HEroBM model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mdtraj
import numpy as np
import torch

from .errors import HeroBMError
from .mapping import SystemMapping
from .model.deploy import LoadedModel, load_model, shipped_models
from .model.inference import predict_chunked


@dataclass
class BackmapResult:
    trajectory: mdtraj.Trajectory  # all-atom (nm), the atoms the model reconstructs
    system: SystemMapping
    model: LoadedModel
    dihedrals: np.ndarray  # (frames, beads, 4): predicted sin/cos phi, psi per bead
    written: list[str] = field(default_factory=list)


def choose_model(cg_topology: mdtraj.Topology) -> LoadedModel:
    """The shipped model whose mapping knows the most residues of the input."""
    names = {r.name for r in cg_topology.residues}
    best, best_hits = None, 0
    for path in shipped_models():
        model = load_model(path)
        hits = len(names & set(model.metadata["molecules"]))
        if hits > best_hits:
            best, best_hits = model, hits
    if best is None:
        raise HeroBMError(f"no shipped model knows any of the residues {sorted(names)[:10]}; pass --model")
    return best


def backmap(cg, model: str | Path | LoadedModel | None = None, *, trajectory: str | Path | None = None,
            output: str | Path | None = None, trajectory_output: str | Path | None = None,
            unmapped: str = "fail", chunk: float = 40.0) -> BackmapResult:
    """Reconstruct the heavy atoms of a CG structure (and optionally every frame of a trajectory).

    ``cg`` is a file path or an mdtraj Trajectory of beads (martinize2 naming).  Molecules
    are made whole first.  ``model`` is a shipped model name, a file, or None to choose
    the shipped model that fits.  Outputs are written atomically.
    """
    from .io import check_output_path, load_input, write_outputs

    if output is not None:
        check_output_path(output, "structure")
    if trajectory_output is not None:
        check_output_path(trajectory_output, "trajectory")
    traj, source = load_input(cg, trajectory)
    loaded = model if isinstance(model, LoadedModel) else (load_model(model) if model else choose_model(traj.topology))
    system = SystemMapping.from_cg(traj.topology, loaded.mapping_set, unmapped=unmapped, source=source)

    bead_type = torch.as_tensor(system.bead_types)
    slot_atom = torch.as_tensor(np.where(system.slot_valid, system.slot_atom, -1))
    xyz = np.empty((traj.n_frames, system.n_atoms, 3), np.float32)
    dihedrals = np.empty((traj.n_frames, system.n_beads, 4), np.float32)
    with torch.no_grad():
        for f in range(traj.n_frames):
            pos = torch.as_tensor(traj.xyz[f, system.cg_input_index] * 10.0, dtype=torch.float32)
            vectors, dih = predict_chunked(loaded.module, pos, bead_type, loaded.cutoff, chunk=chunk)
            atoms = loaded.module.reconstruct(pos, bead_type, vectors, slot_atom, system.n_atoms)
            xyz[f] = atoms.numpy() / 10.0
            dihedrals[f] = dih.numpy()
    out = mdtraj.Trajectory(xyz, system.aa_topology, time=traj.time)
    if traj.unitcell_vectors is not None:
        out.unitcell_vectors = traj.unitcell_vectors
    return BackmapResult(out, system, loaded, dihedrals, write_outputs(out, output, trajectory_output))

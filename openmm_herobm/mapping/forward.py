"""Forward mapping of whole files: all-atom structure/trajectory -> CG (``herobm map``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import mdtraj
import numpy as np

from .mapping_set import MappingSet
from .system import SystemMapping


@dataclass
class ForwardMapResult:
    cg: mdtraj.Trajectory  # CG trajectory (nm), martinize2 residue/bead naming
    system: SystemMapping
    written: list[str] = field(default_factory=list)


def map_structure(structure: str | Path | mdtraj.Trajectory, mapping: str | Path | MappingSet = "martini3", *,
                  trajectory: str | Path | None = None, output: str | Path | None = None,
                  trajectory_output: str | Path | None = None, unmapped: str = "fail",
                  incomplete: str = "error") -> ForwardMapResult:
    """Map an all-atom structure (and optionally its trajectory) to CG beads.

    Molecules are made whole across periodic boundaries first.  ``output`` receives the
    first frame (PDB, GRO, mmCIF), ``trajectory_output`` every frame (DCD, XTC, ...);
    both are written atomically.  ``unmapped``/``incomplete`` are as in
    :meth:`SystemMapping.from_atomistic`.
    """
    from ..io import check_output_path, load_input, write_outputs

    # fail on a bad output name before any work is done
    if output is not None:
        check_output_path(output, "structure")
    if trajectory_output is not None:
        check_output_path(trajectory_output, "trajectory")
    mapping_set = mapping if isinstance(mapping, MappingSet) else MappingSet.load(mapping)
    traj, source = load_input(structure, trajectory)
    system = SystemMapping.from_atomistic(traj.topology, mapping_set, unmapped=unmapped, source=source,
                                          incomplete=incomplete)
    cg = system.cg_trajectory(traj.xyz, unitcell_vectors=traj.unitcell_vectors, time=traj.time)
    return ForwardMapResult(cg, system, write_outputs(cg, output, trajectory_output))


def bead_rmsd(a: np.ndarray, b: np.ndarray) -> float:
    """RMSD between two bead sets of the same shape (no superposition)."""
    return float(np.sqrt(((np.asarray(a) - np.asarray(b)) ** 2).sum(-1).mean()))

"""What the readers, the writers and make_whole share: formats, insertion codes, atom labels, checks.

The in-memory type is :class:`mdtraj.Trajectory` (positions in nm).  On top of
mdtraj each residue carries a plain attribute ``residue.insertion_code`` ('' when
none), which our PDB/mmCIF readers fill and our writers put back.
"""

from __future__ import annotations

import os

import mdtraj as md
import numpy as np
from mdtraj.core import element as md_element

from ..errors import StructureError

STRUCTURE_FORMATS = (".pdb", ".gro", ".cif", ".mmcif")  # also readable gzipped
TRAJECTORY_FORMATS = (".xtc", ".dcd", ".trr")


def _split_ext(path):
    """('.pdb', True) for 'x.pdb.gz'."""
    name = os.path.basename(os.fspath(path)).lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    return os.path.splitext(name)[1], gz


def insertion_code(residue) -> str:
    """The residue's insertion code ('' when none or when mdtraj made the residue)."""
    return getattr(residue, "insertion_code", "") or ""


def is_coarse_grained(topology: md.Topology) -> bool:
    """True when every particle has the virtual element (how CG files are loaded)."""
    return topology.n_atoms > 0 and all(a.element is md_element.virtual for a in topology.atoms)


def _describe_atom(atom) -> str:
    res = atom.residue
    chain = getattr(res.chain, "chain_id", None) or "-"
    return f"atom {atom.name} of residue {res.name} {res.resSeq}{insertion_code(res)} chain {chain}"


def _check_finite(traj, name, action):
    bad = ~np.isfinite(traj.xyz).all(axis=2)
    if bad.any():
        frame, index = np.argwhere(bad)[0]
        raise StructureError(
            f"{name}: non-finite coordinate (NaN or inf) in frame {frame} at "
            f"{_describe_atom(traj.topology.atom(int(index)))}; {action}")


def atom_slice(traj: md.Trajectory, atom_indices) -> md.Trajectory:
    """``traj.atom_slice`` that keeps ``residue.insertion_code`` (mdtraj drops it)."""
    atom_indices = np.asarray(atom_indices, dtype=int)
    out = traj.atom_slice(atom_indices)
    # mdtraj keeps, in order, every residue that still has an atom
    kept = np.unique([traj.topology.atom(int(i)).residue.index for i in atom_indices])
    for new, old in zip(out.topology.residues, kept):
        new.insertion_code = insertion_code(traj.topology.residue(int(old)))
    return out


def _one_line(exc):
    return " ".join(str(exc).split())[:200] or type(exc).__name__

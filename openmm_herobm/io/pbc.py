"""Periodic boundaries: molecules made whole again (minimum image), the box kept."""

from __future__ import annotations

import mdtraj as md
import numpy as np

from ..errors import StructureError

POLYMER_LINK_NM = 0.6  # BB/CA of consecutive residues closer than this: one molecule


def _min_image(d, box, inv_box):
    """Minimum image of displacements d (F, M, 3) via fractional coordinates.

    Exact for orthorhombic boxes; for triclinic boxes rounding the fractional
    coordinates is an approximation that is exact for displacements shorter than
    half the smallest box height (always true for bonded neighbours).
    """
    frac = np.einsum("fmi,fij->fmj", d, inv_box)
    frac -= np.round(frac)
    return np.einsum("fmj,fjk->fmk", frac, box)


def _default_molecules(traj, box, inv_box):
    """Per-atom molecule id: one residue = one molecule, except consecutive
    residues of a chain whose BB/CA are within POLYMER_LINK_NM (minimum image)."""
    top = traj.topology
    res_of_atom = np.array([a.residue.index for a in top.atoms])
    anchor = np.full(top.n_residues, -1)
    chain_of_res = np.empty(top.n_residues, dtype=int)
    for res in top.residues:
        chain_of_res[res.index] = res.chain.index
        anchor[res.index] = next((a.index for a in res.atoms if a.name in ("BB", "CA")), -1)
    link = (anchor[:-1] >= 0) & (anchor[1:] >= 0) & (chain_of_res[:-1] == chain_of_res[1:])
    if link.any():
        # the decision uses frame 0 so that all frames share one molecule definition
        d = traj.xyz[:1, anchor[1:], :].astype(np.float64) - traj.xyz[:1, anchor[:-1], :]
        d = _min_image(d, box[:1], inv_box[:1])
        link &= np.linalg.norm(d[0], axis=1) < POLYMER_LINK_NM
    mol_of_res = np.concatenate([[0], np.cumsum(~link)])
    return mol_of_res[res_of_atom]


def make_whole(traj: md.Trajectory, molecules=None) -> md.Trajectory:
    """Return a copy of ``traj`` whose molecules are whole across periodic boundaries.

    ``molecules``: optional list of atom-index sequences, one per molecule, in
    walking order; atoms in none of them are left untouched.  Default: every
    residue is a molecule, except that consecutive residues of one chain whose
    BB/CA particles are within 0.6 nm (minimum image, frame 0) are joined into
    one polymer molecule.  Each molecule is unwrapped by walking its atoms
    in order; atom i+1 goes to the minimum image of its displacement from atom i
    (a cumulative sum over all molecules and frames at once).  The first atom of
    each molecule keeps its position.  No bonds are needed.  Without a unit cell
    the trajectory is returned unchanged (as a copy).  The topology object is
    shared with the input (so insertion codes are kept); positions are new.
    """
    xyz = traj.xyz.astype(np.float64)
    out = md.Trajectory(xyz.astype(np.float32), traj.topology, time=traj.time.copy())
    if traj.unitcell_vectors is None:
        return out
    out.unitcell_vectors = traj.unitcell_vectors.copy()
    box = traj.unitcell_vectors.astype(np.float64)
    if np.any(np.abs(np.linalg.det(box)) < 1e-9):
        return out  # a degenerate (zero) box means no periodicity
    inv_box = np.linalg.inv(box)

    if molecules is None:
        mol = _default_molecules(traj, box, inv_box)
        order = np.argsort(mol, kind="stable")  # molecule by molecule, file order inside
        is_start = np.r_[True, mol[order][1:] != mol[order][:-1]]
    else:
        parts = [np.asarray(m, dtype=int).ravel() for m in molecules if len(m)]
        if not parts:
            return out
        order = np.concatenate(parts)
        if order.min() < 0 or order.max() >= traj.n_atoms:
            raise StructureError(f"make_whole: molecule atom index out of range "
                                 f"(the structure has {traj.n_atoms} atoms)")
        is_start = np.zeros(len(order), dtype=bool)
        is_start[np.cumsum([0] + [len(p) for p in parts[:-1]])] = True

    pos = xyz[:, order, :]
    steps = np.zeros_like(pos)
    steps[:, 1:] = _min_image(pos[:, 1:] - pos[:, :-1], box, inv_box)
    steps[:, is_start] = 0.0
    walk = np.cumsum(steps, axis=1)
    start_of = np.maximum.accumulate(np.where(is_start, np.arange(len(order)), 0))
    # position = first atom of the molecule + walked displacement since that atom
    new = pos[:, start_of] + walk - walk[:, start_of]
    xyz[:, order, :] = new
    out.xyz = xyz.astype(np.float32)
    return out

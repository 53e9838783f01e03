"""Build a :class:`~openmm_herobm.reconstruction.side_chain_library.SideChainLibrary` from
all-atom training chains, and tune its blend weights against a model on validation chains.

    python scripts/build_side_chain_library.py --help
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np

from ..mapping import MappingSet
from ..reconstruction import (
    NEIGHBOURS, ResidueLibrary, SideChainBlend, SideChainLibrary, residue_frames, side_chain_groups,
)
from .dataset import _load, map_heavy_atoms

#: the types the library serves: one bead leaves part of their side chain free (ALA, CYS, HIS and
#: the rings are pinned down by their beads; there the library measured worse than the fit)
LIBRARY_RESIDUES = ("ARG", "ASN", "ASP", "GLN", "GLU", "ILE", "LEU", "LYS", "MET", "PRO", "SER", "THR", "VAL")
WEIGHT_GRID = tuple(np.round(np.arange(0.0, 1.01, 0.1), 2))


def mapped_chain(path: str, ms: MappingSet):
    """(SystemMapping of the heavy atoms, their coordinates (A), the Martini beads (A)) of the first model."""
    traj = _load(path)
    sub, system, _ = map_heavy_atoms(traj, ms, os.path.basename(path).split(".")[0])
    xyz = sub.xyz[0].astype(np.float64) * 10.0
    return system, xyz, system.map(xyz)


def local_entries(xyz: np.ndarray, beads: np.ndarray, group: dict) -> tuple[np.ndarray, np.ndarray]:
    """(keys ``(q, 3b)``, side-chain atoms ``(q, m, 3)``) of one residue group in their backbone frames."""
    rot, ca, keys = residue_frames(xyz, beads, group)
    return keys, np.einsum("qai,qji->qaj", xyz[group["atoms"]] - ca, rot)


def build_side_chain_library(files, mapping: str | MappingSet = "martini3", max_entries: int = 12000,
                             residues=LIBRARY_RESIDUES, seed: int = 0, progress=None) -> SideChainLibrary:
    """A library (blend weights 1.0) from all-atom chains: at most ``max_entries`` random residues per type."""
    ms = mapping if isinstance(mapping, MappingSet) else MappingSet.load(mapping)
    keys, atoms, layout = defaultdict(list), defaultdict(list), {}
    failed = []
    for k, path in enumerate(files):
        try:
            system, xyz, beads = mapped_chain(str(path), ms)
        except Exception as exc:  # one unreadable chain must not stop a 1000-chain build
            failed.append(f"{path}: {type(exc).__name__}: {exc}")
            continue
        for name, g in side_chain_groups(system, residues).items():
            key, atom = local_entries(xyz, beads, g)
            ok = np.isfinite(key).all(1) & np.isfinite(atom).all((1, 2))
            keys[name].append(key[ok])
            atoms[name].append(atom[ok])
            layout[name] = (g["atom_names"], g["bead_names"])
        if progress:
            progress(k + 1, len(files))
    rng = np.random.default_rng(seed)
    out = {}
    for name in sorted(keys):
        key, atom = np.concatenate(keys[name]), np.concatenate(atoms[name])
        if len(key) > max_entries:
            pick = np.sort(rng.choice(len(key), max_entries, replace=False))
            key, atom = key[pick], atom[pick]
        out[name] = ResidueLibrary(key.astype(np.float16), atom.astype(np.float16), *layout[name], weight=1.0)
    info = {"chains": len(files) - len(failed), "failed_chains": len(failed), "max_entries": max_entries,
            "mapping_set": ms.name, "mapping_hash": ms.files_hash}
    return SideChainLibrary(out, NEIGHBOURS, info)


def tune_weights(library: SideChainLibrary, model, files, grid=WEIGHT_GRID, progress=None) -> dict[str, dict]:
    """Per residue type, the blend weight with the lowest side-chain RMSD on ``files``.

    Every chain is mapped, backmapped with ``model`` (network + protein fit, no library), and
    the library's side chains are placed on the fitted backbone; the weight is then chosen on
    the pooled squared deviations.  Returns ``{type: {"weight", "rmsd_network", "rmsd_blend",
    "n_residues"}}`` (RMSDs in A, over the side-chain heavy atoms).
    """
    from ..backmapping import backmap

    sq = defaultdict(lambda: np.zeros(len(grid)))
    count = defaultdict(int)
    residues = defaultdict(int)
    for k, path in enumerate(files):
        system, xyz, beads = mapped_chain(str(path), model.mapping_set)
        result = backmap(system.cg_trajectory(xyz[None] / 10.0), model, fit=True, side_chains=False)
        pred = result.trajectory.xyz[0].astype(np.float64) * 10.0
        blend = SideChainBlend(result.system, library)
        placed = blend.library_atoms(pred, beads[result.bead_index])
        ref_groups = side_chain_groups(system, tuple(library.residues))
        ref_by_cg = {res.cg_residue: j for j, res in enumerate(system.residues)}
        for name, g in blend.groups.items():
            # the same residue in both systems: the backmapped one is built from the reference's CG residues
            ref_of = {j: i for i, j in enumerate(ref_groups.get(name, {}).get("residue", []))}
            cg_res = [result.system.residues[j].cg_residue for j in g["residue"]]
            pairs = [(i, ref_of[ref_by_cg[c]]) for i, c in enumerate(cg_res) if ref_by_cg.get(c) in ref_of]
            if not pairs:
                continue
            p, r = np.array(pairs).T
            net = pred[g["atoms"][p]]
            lib = placed[name][p]
            ref = xyz[ref_groups[name]["atoms"][r]]
            for j, w in enumerate(grid):
                sq[name][j] += ((w * lib + (1 - w) * net - ref) ** 2).sum()
            count[name] += net.shape[0] * net.shape[1]
            residues[name] += net.shape[0]
        if progress:
            progress(k + 1, len(files))
    out = {}
    for name in sorted(sq):
        msd = sq[name] / max(count[name], 1)
        best = int(np.argmin(msd))
        out[name] = {"weight": float(grid[best]), "rmsd_network": float(np.sqrt(msd[0])),
                     "rmsd_blend": float(np.sqrt(msd[best])), "n_residues": int(residues[name])}
    return out

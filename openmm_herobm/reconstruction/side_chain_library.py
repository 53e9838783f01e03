"""Side-chain library: bead-conditioned side-chain conformations from training structures.

One Martini 3 bead holds up to five side-chain atoms, so the last torsions of GLU, GLN, MET,
ARG, ... are not pinned down by the beads: the best a backmapper can do there is the
*conditional mean* of the atoms given what it sees.  The network (trained for 2.8 CPU hours)
approximates that mean poorly; a kernel k-nearest-neighbour regression over the training set
does it directly:

* **key** of a residue: its side-chain beads in the residue's backbone frame
  (origin CA, x towards N, z normal to the N-CA-C plane), ``(3 * n_side_beads,)`` Angstrom;
* **library entry**: key and side-chain heavy atoms (same frame) of a complete training residue;
* **prediction**: Gaussian-kernel average of the atoms of the ``neighbours`` entries with the
  closest keys (bandwidth half the distance to the farthest of them).

:class:`SideChainBlend` applies it to a system after the backbone fit: per residue type the
library's prediction and the network's (fitted) atoms are mixed with a weight tuned on
validation chains (``scripts/build_side_chain_library.py``), and the side chain is then shifted
back onto its beads, and (in :class:`~openmm_herobm.reconstruction.protein_fit.ProteinFit`)
polished towards ideal geometry.  The previous/next BB beads in the key measured worse on
validation (library alone, 25 chains: side chain 0.515 A with the residue's own beads, 0.531 A
with the neighbours' BB beads added at weight 0.3), so the key is the residue's own beads.

The library is stored inside the model file (``side_chains.npz``, float16) and loaded
without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..chemistry import NOT_SIDE_CHAIN
from ._packed import pack, unpack
from .hierarchical import bead_subset, recenter

NEIGHBOURS = 32
EXTRA_FILE = "side_chains.npz"
FORMAT = "openmm-herobm-side-chains/1"


def backbone_frame(n: np.ndarray, ca: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Rotation ``(..., 3, 3)`` whose rows are the residue frame's axes: x along CA->N, z normal
    to N-CA-C.  Local coordinates are ``(x - ca) @ R.T``; global ones ``local @ R + ca``."""
    with np.errstate(invalid="ignore", divide="ignore"):  # collinear N, CA, C: NaN, handled by callers
        e1 = n - ca
        e1 = e1 / np.linalg.norm(e1, axis=-1, keepdims=True)
        e3 = np.cross(e1, c - ca)
        e3 = e3 / np.linalg.norm(e3, axis=-1, keepdims=True)
    return np.stack([e1, np.cross(e3, e1), e3], axis=-2)


def side_chain_layout(mapping) -> tuple[list[int], list[int]]:
    """(mapping atom indices of the side-chain heavy atoms, mapping bead indices of the side-chain
    beads) of one residue mapping; the order is the mapping's."""
    atoms = [i for i, a in enumerate(mapping.atoms)
             if not a.is_hydrogen and not a.optional and a.name not in NOT_SIDE_CHAIN]
    beads = [j for j, b in enumerate(mapping.beads) if b != "BB"]
    return atoms, beads


@dataclass
class ResidueLibrary:
    """Library entries of one residue type."""

    keys: np.ndarray  # (n, 3 * n_side_beads) float16, A, backbone frame
    atoms: np.ndarray  # (n, n_side_atoms, 3) float16, A, backbone frame
    atom_names: tuple[str, ...]
    bead_names: tuple[str, ...]
    weight: float  # share of the library in the blend with the network (0 = unused)

    def __post_init__(self):
        self._tree = None

    def predict(self, keys: np.ndarray, neighbours: int) -> np.ndarray:
        """Kernel-averaged atoms ``(q, n_side_atoms, 3)`` for query keys ``(q, 3 * n_side_beads)``."""
        from scipy.spatial import cKDTree

        if self._tree is None:
            self._tree = cKDTree(self.keys.astype(np.float64))
            self._atoms = self.atoms.astype(np.float64).reshape(len(self.atoms), -1)
        k = min(neighbours, len(self.keys))
        dist, idx = self._tree.query(keys, k=k)
        dist, idx = dist.reshape(len(keys), k), idx.reshape(len(keys), k)
        h = 0.5 * dist[:, -1:] + 1e-3
        w = np.exp(-0.5 * (dist / h) ** 2)
        w /= w.sum(axis=1, keepdims=True)
        return np.einsum("qk,qkd->qd", w, self._atoms[idx]).reshape(len(keys), -1, 3)


class SideChainLibrary:
    """Per-residue-type libraries (:class:`ResidueLibrary`) and how many neighbours to average."""

    def __init__(self, residues: dict[str, ResidueLibrary], neighbours: int = NEIGHBOURS, info: dict | None = None):
        self.residues = residues
        self.neighbours = neighbours
        self.info = info or {}

    def __len__(self) -> int:
        return sum(len(r.keys) for r in self.residues.values())

    def to_bytes(self) -> bytes:
        meta = {"format": FORMAT, "neighbours": self.neighbours, "info": self.info,
                "residues": {n: {"atoms": list(r.atom_names), "beads": list(r.bead_names), "weight": r.weight}
                             for n, r in self.residues.items()}}
        arrays = {}
        for n, r in self.residues.items():
            arrays[f"{n}.keys"] = r.keys.astype(np.float16)
            arrays[f"{n}.atoms"] = r.atoms.astype(np.float16)
        return pack(meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> SideChainLibrary:
        meta, z = unpack(data, FORMAT, "side-chain library")
        residues = {n: ResidueLibrary(z[f"{n}.keys"], z[f"{n}.atoms"], tuple(m["atoms"]), tuple(m["beads"]),
                                      float(m["weight"]))
                    for n, m in meta["residues"].items()}
        return cls(residues, int(meta["neighbours"]), meta.get("info", {}))

    def with_weights(self, weights: dict[str, float]) -> SideChainLibrary:
        """A copy sharing the entries, with other blend weights (types not named keep theirs)."""
        residues = {n: ResidueLibrary(r.keys, r.atoms, r.atom_names, r.bead_names, float(weights.get(n, r.weight)))
                    for n, r in self.residues.items()}
        return SideChainLibrary(residues, self.neighbours, dict(self.info))


def side_chain_groups(system, residues) -> dict[str, dict]:
    """Per residue type in ``residues``: the residues of ``system`` with N, CA, C, every side-chain
    heavy atom and side-chain bead present, as system indices - ``frame`` ``(q, 3)`` (N, CA, C),
    ``atoms`` ``(q, m)``, ``beads`` ``(q, b)``, ``residue`` ``(q,)`` (index in ``system.residues``)
    - and the type's ``atom_names`` and ``bead_names``."""
    groups: dict[str, dict] = {}
    for k, res in enumerate(system.residues):
        name = res.mapping.name
        if name not in residues:
            continue
        atoms, beads = side_chain_layout(res.mapping)
        names = [a.name for a in res.mapping.atoms]
        frame = [res.atoms[names.index(n)] if n in names else -1 for n in ("N", "CA", "C")]
        index = res.atoms[atoms]
        if min(frame) < 0 or (index < 0).any() or not beads:
            continue
        g = groups.setdefault(name, {"frame": [], "atoms": [], "beads": [], "residue": [],
                                     "atom_names": tuple(names[i] for i in atoms),
                                     "bead_names": tuple(res.mapping.beads[j] for j in beads)})
        g["frame"].append(frame)
        g["atoms"].append(index)
        g["beads"].append(res.beads[beads])
        g["residue"].append(k)
    for g in groups.values():
        for key in ("frame", "atoms", "beads", "residue"):
            g[key] = np.array(g[key], np.int64)
    return groups


def residue_frames(xyz: np.ndarray, beads: np.ndarray, group: dict):
    """(rotations ``(q, 3, 3)``, CA ``(q, 1, 3)``, keys ``(q, 3b)``) of one :func:`side_chain_groups` group."""
    f = xyz[group["frame"]]
    rot = backbone_frame(f[:, 0], f[:, 1], f[:, 2])
    ca = f[:, 1][:, None]
    keys = np.einsum("qbi,qji->qbj", beads[group["beads"]] - ca, rot).reshape(len(rot), -1)
    return rot, ca, keys


class SideChainBlend:
    """Mix the library's side chains into a system's reconstructed atoms; call per frame.

    Residues take part when their mapping is in the library with a weight > 0 and their N, CA,
    C, side-chain atoms and side-chain beads are all present.
    """

    def __init__(self, system, library: SideChainLibrary):
        self.library = library
        used = tuple(n for n, r in library.residues.items() if r.weight > 0)
        # a mapping that differs from the library's (another naming) is left to the network
        self.groups = {n: g for n, g in side_chain_groups(system, used).items()
                       if (g["atom_names"], g["bead_names"]) == (library.residues[n].atom_names,
                                                                 library.residues[n].bead_names)}
        self.empty = not self.groups
        if self.empty:
            return
        # recentre the blended side-chain beads, moving only their atoms
        blended = np.unique(np.concatenate([g["beads"].ravel() for g in self.groups.values()]))
        self.bead_index, self.rows, self.cols, self.vals = bead_subset(system.weights, blended)
        self.moved = torch.unique(self.cols)

    def library_atoms(self, xyz: np.ndarray, beads: np.ndarray) -> dict[str, np.ndarray]:
        """The library's side chains ``{type: (residues, atoms, 3)}`` A, placed on the backbone of ``xyz``."""
        out = {}
        for name, g in self.groups.items():
            rot, ca, keys = residue_frames(xyz, beads, g)
            placed = xyz[g["atoms"]].astype(np.float64)  # a degenerate frame (NaN) keeps its atoms
            ok = np.isfinite(keys).all(axis=1) & np.isfinite(rot).all(axis=(1, 2))
            if ok.any():
                local = self.library.residues[name].predict(keys[ok], self.library.neighbours)
                placed[ok] = np.einsum("qai,qij->qaj", local, rot[ok]) + ca[ok]
            out[name] = placed
        return out

    def __call__(self, xyz: np.ndarray, beads: np.ndarray) -> np.ndarray:
        """``xyz`` ``(n_atoms, 3)`` A with library side chains mixed in and shifted onto ``beads``."""
        if self.empty:
            return xyz
        x = np.asarray(xyz, np.float64).copy()
        b = np.asarray(beads, np.float64)
        for name, placed in self.library_atoms(x, b).items():
            w = self.library.residues[name].weight
            idx = self.groups[name]["atoms"]
            x[idx] = w * placed + (1.0 - w) * x[idx]
        t = torch.as_tensor(x)[None]
        target = torch.as_tensor(b)[self.bead_index][None]
        moved = recenter(t, target, self.rows, self.cols, self.vals)[0]
        t = t[0]
        t[self.moved] = moved[self.moved]
        return t.numpy().astype(np.asarray(xyz).dtype)

"""Lipid atoms from their beads by linear regression in local bead frames.

What a lipid's beads say about its atoms is what the atoms' *conditional mean* given the beads
is; the best per-atom RMSD any backmapper reaches is that mean's.  For lipids a linear model of
it, in frames that turn with the molecule, does better than the equivariant network: on the
held-out NMRLipids CHARMM36 bilayer POPCpure the network places POPC's heavy atoms 0.93 A RMS
from the truth, this regression 0.74 A, from the same 560 training molecules (BENCHMARKS.md,
"Lipids", session 15).  Its training error is hardly lower than its validation error, and
kernel (non-linear) versions only fit the training set better: the linear mean is about what
one molecule's beads determine.

For every bead of a molecule type and each of its *frames* - origin the bead, x towards a
bonded bead, y in the plane of a third bead at most two bonds away - the bead's own heavy atoms
in that frame are an affine function of the frame coordinates of the beads at most ``radius``
bonds away (ridge regression, :mod:`openmm_herobm.training.lipid_frames`).  A bead's frames
are averaged in space, each weighted by how well it is defined (sin^2 of its angle at the
bead) over its training error, so no nearly collinear triple decides alone.  Frames turn
with the molecule and are never mirrored: the output keeps the handedness of the training
molecules (glycerol C2, cholesterol's eight centres).

Stored inside the lipid model file (``lipid_frames.npz``, float32), loaded without pickle.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._packed import pack, unpack

LIPID_FRAMES = "lipid_frames.npz"  # its name inside the model file
FORMAT = "openmm-herobm-lipid-frames/1"


def local_frames(origin: np.ndarray, x_to: np.ndarray, plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rotations ``(..., 3, 3)``, rows the frame's axes; sin^2 of the angle x_to-origin-plane ``(...)``).

    Local coordinates are ``(x - origin) @ R.T``; global ones ``local @ R + origin``.  A degenerate
    frame (coincident or collinear beads) gives NaN rows and weight 0."""
    with np.errstate(invalid="ignore", divide="ignore"):
        u = x_to - origin
        v = plane - origin
        uu = np.linalg.norm(u, axis=-1, keepdims=True)
        vv = np.linalg.norm(v, axis=-1, keepdims=True)
        e1 = u / uu
        w = v - (v * e1).sum(-1, keepdims=True) * e1
        ww = np.linalg.norm(w, axis=-1, keepdims=True)
        e2 = w / ww
        sin2 = (ww / vv)[..., 0] ** 2
    sin2 = np.where(np.isfinite(sin2), sin2, 0.0)
    return np.stack([e1, e2, np.cross(e1, e2)], axis=-2), sin2


@dataclass
class MoleculeFrames:
    """The regression of one molecule type (mapping order of beads and heavy atoms)."""

    bead_names: tuple[str, ...]
    atom_names: tuple[str, ...]  # the heavy atoms it places
    frames: np.ndarray  # (F, 3) int: bead indices of origin, x bead, plane bead
    inputs: np.ndarray  # (F, I) int: bead indices whose frame coordinates are the features; -1 = padding
    outputs: np.ndarray  # (F, O) int: atom indices (into atom_names) the frame places; -1 = padding
    weights: np.ndarray  # (F, 3 I + 1, 3 O) float: affine map, features (x, y, z per input) + 1 -> atoms
    error: np.ndarray  # (F,) training RMS error of the frame's atoms, A

    def predict(self, beads: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Atoms ``(n, n_atoms, 3)`` A of ``n`` molecules from their beads ``(n, n_beads, 3)`` A, and
        which atoms got a prediction ``(n, n_atoms)`` bool (every atom of a sound molecule)."""
        b = np.asarray(beads, np.float64)
        n, (f_count, n_in), n_out = len(b), self.inputs.shape, self.outputs.shape[1]
        origin = b[:, self.frames[:, 0]]  # (n, F, 3)
        rot, sin2 = local_frames(origin, b[:, self.frames[:, 1]], b[:, self.frames[:, 2]])
        x = b[:, np.clip(self.inputs, 0, None)] - origin[:, :, None]  # (n, F, I, 3)
        local = np.einsum("nfij,nfkj->nfki", rot, x) * (self.inputs >= 0)[None, :, :, None]
        features = np.concatenate([local.reshape(n, f_count, 3 * n_in), np.ones((n, f_count, 1))], axis=2)
        atoms_local = np.einsum("nfi,fio->nfo", features, self.weights).reshape(n, f_count, n_out, 3)
        placed = np.einsum("nfkj,nfji->nfki", atoms_local, rot) + origin[:, :, None]
        weight = sin2 / self.error ** 2  # (n, F)
        ok = np.isfinite(placed).all(axis=(2, 3))
        weight = np.where(ok, weight, 0.0)
        placed = np.where(ok[:, :, None, None], placed, 0.0)
        total = np.zeros((n, len(self.atom_names), 3))
        norm = np.zeros((n, len(self.atom_names)))
        valid = self.outputs >= 0
        f_idx, o_idx = np.nonzero(valid)
        atom = self.outputs[f_idx, o_idx]
        np.add.at(total, (slice(None), atom), placed[:, f_idx, o_idx] * weight[:, f_idx, None])
        np.add.at(norm, (slice(None), atom), weight[:, f_idx])
        got = norm > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            out = total / norm[..., None]
        return np.where(got[..., None], out, np.nan), got


class LipidFrames:
    """Per-molecule-type regressions (:class:`MoleculeFrames`), keyed by mapping name."""

    def __init__(self, molecules: dict[str, MoleculeFrames], info: dict | None = None):
        self.molecules = molecules
        self.info = info or {}

    def to_bytes(self) -> bytes:
        meta = {"format": FORMAT, "info": self.info,
                "molecules": {n: {"beads": list(m.bead_names), "atoms": list(m.atom_names)}
                              for n, m in self.molecules.items()}}
        arrays = {}
        for n, m in self.molecules.items():
            arrays.update({f"{n}.frames": m.frames.astype(np.int16), f"{n}.inputs": m.inputs.astype(np.int16),
                           f"{n}.outputs": m.outputs.astype(np.int16), f"{n}.weights": m.weights.astype(np.float32),
                           f"{n}.error": m.error.astype(np.float32)})
        return pack(meta, arrays)

    @classmethod
    def from_bytes(cls, data: bytes) -> LipidFrames:
        meta, z = unpack(data, FORMAT, "lipid frame")
        molecules = {}
        for n, m in meta["molecules"].items():
            molecules[n] = MoleculeFrames(tuple(m["beads"]), tuple(m["atoms"]), *(
                z[f"{n}.{key}"].astype(np.int64) for key in ("frames", "inputs", "outputs")),
                z[f"{n}.weights"].astype(np.float64), z[f"{n}.error"].astype(np.float64))
            _check(n, molecules[n])
        return cls(molecules, meta.get("info", {}))


def _check(name: str, m: MoleculeFrames) -> None:
    """Shapes and indices consistent (a damaged file is refused, never indexed out of range)."""
    f = len(m.frames)
    ok = (m.frames.shape == (f, 3) and m.inputs.shape[0] == f and m.outputs.shape[0] == f
          and m.weights.shape == (f, 3 * m.inputs.shape[1] + 1, 3 * m.outputs.shape[1]) and m.error.shape == (f,)
          and (m.frames >= 0).all() and (m.frames < len(m.bead_names)).all()
          and (m.inputs < len(m.bead_names)).all() and (m.outputs < len(m.atom_names)).all()
          and (m.error > 0).all() and np.isfinite(m.weights).all())
    if not ok:
        raise ValueError(f"lipid frames of {name}: inconsistent arrays")


def frame_groups(system, molecules: dict) -> dict[str, dict]:
    """Per molecule type of ``molecules`` (``{name: layout}``, a layout being anything with
    ``bead_names`` and ``atom_names``, e.g. a :class:`MoleculeFrames`): the residues of ``system``
    with every bead and every listed atom present, as system indices - ``beads`` ``(q, n_beads)``,
    ``atoms`` ``(q, n_atoms)``.  A residue whose mapping has other bead or atom names is left out."""
    where: dict = {}  # per mapping: the rows of the layout's atoms in it, or None
    groups: dict[str, dict] = {}
    for res in system.residues:
        mapping = res.mapping
        if id(mapping) not in where:
            known = molecules.get(mapping.name)
            names = [a.name for a in mapping.atoms]
            where[id(mapping)] = (np.array([names.index(a) for a in known.atom_names], np.int64)
                                  if known is not None and tuple(mapping.beads) == tuple(known.bead_names)
                                  and set(known.atom_names) <= set(names) else None)
        rows = where[id(mapping)]
        if rows is None:
            continue
        index = res.atoms[rows]
        if (index < 0).any():
            continue
        g = groups.setdefault(mapping.name, {"beads": [], "atoms": []})
        g["beads"].append(res.beads)
        g["atoms"].append(index)
    return {n: {k: np.array(v, np.int64) for k, v in g.items()} for n, g in groups.items()}


class LipidFrameRegression:
    """Replace the network's atoms of the lipids a :class:`LipidFrames` knows; call per frame."""

    def __init__(self, system, frames: LipidFrames):
        self.frames = frames
        self.groups = frame_groups(system, frames.molecules)
        self.empty = not self.groups

    def __call__(self, xyz: np.ndarray, beads: np.ndarray) -> np.ndarray:
        """``xyz`` ``(n_atoms, 3)`` A with the known lipids' heavy atoms from ``beads`` ``(n_beads, 3)`` A."""
        if self.empty:
            return xyz
        out = np.array(xyz, copy=True)
        b = np.asarray(beads, np.float64)
        for name, g in self.groups.items():
            atoms, got = self.frames.molecules[name].predict(b[g["beads"]])
            out[g["atoms"][got]] = atoms[got]
        return out

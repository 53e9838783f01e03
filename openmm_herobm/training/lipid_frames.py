"""Fit a :class:`~openmm_herobm.reconstruction.lipid_frames.LipidFrames` regression on all-atom
training bilayers (every molecule of a type the mapping set knows and the set has no protein
residues for).

    python scripts/build_lipid_frames.py --help
"""

from __future__ import annotations

from collections import defaultdict, deque
from types import SimpleNamespace

import numpy as np

from ..chemistry import PROTEIN_RESIDUES
from ..mapping import MappingSet
from ..reconstruction import LipidFrames, MoleculeFrames, frame_groups, local_frames
from .side_chains import mapped_chain

RADIUS = 3  # bonds: the beads whose frame coordinates are a bead's features (validation: 2, 4, 5, 8 worse)
RIDGE = 10.0  # on standardised features; the validation RMSD is flat from 1 to 50 (POPC)
MIN_SIN2 = 0.05  # sin^2 of the frame angle at the bead, median over the training molecules
MIN_MOLECULES = 20  # fewer training molecules of a type: left to the network


def bead_graph(mapping) -> list[set[int]]:
    """Bonded beads: two beads are bonded when a heavy-atom bond joins their atoms."""
    owner = {a.name: mapping.beads.index(a.memberships[0].bead) for a in mapping.atoms
             if not a.is_hydrogen and a.memberships}
    graph: list[set[int]] = [set() for _ in mapping.beads]
    for x, y in mapping.bonds:
        if x in owner and y in owner and owner[x] != owner[y]:
            graph[owner[x]].add(owner[y])
            graph[owner[y]].add(owner[x])
    return graph


def _distances(graph: list[set[int]], start: int) -> dict[int, int]:
    seen, queue = {start: 0}, deque([start])
    while queue:
        u = queue.popleft()
        for v in graph[u]:
            if v not in seen:
                seen[v] = seen[u] + 1
                queue.append(v)
    return seen


def design(mapping, radius: int = RADIUS) -> tuple[list[str], list[int], list[tuple[int, int, int]], list[list[int]]]:
    """(heavy atom names, their beads, candidate frames (bead, x bead, plane bead), each frame's
    input beads, by bead name) of one molecule type."""
    graph = bead_graph(mapping)
    heavy = [a for a in mapping.atoms if not a.is_hydrogen and a.memberships and not a.optional]
    names = [a.name for a in heavy]
    owner = [mapping.beads.index(a.memberships[0].bead) for a in heavy]
    frames, inputs = [], []
    for b in sorted(set(owner)):
        dist = _distances(graph, b)
        near = [k for k, d in dist.items() if 0 < d <= radius]
        for x in sorted(graph[b]):
            for p in sorted(k for k, d in dist.items() if 0 < d <= 2 and k != x):
                frames.append((b, x, p))
                inputs.append(sorted(set(near) | {x, p}, key=lambda k: mapping.beads[k]))
    return names, owner, frames, inputs


def _frame_samples(mapping, beads: np.ndarray, atoms: np.ndarray, radius: int) -> list[dict]:
    """Every usable frame of one type with its training features and targets, and its
    *signature*: the names of its beads, of their atoms and of the atoms it places.  Frames of
    different types with one signature describe the same chemistry (a PC's and a PE's oleoyl
    tail, three bonds from the head) and are fitted together."""
    names, owner, candidates, candidate_inputs = design(mapping, radius)
    owner = np.asarray(owner)
    atoms_of = {b: tuple(sorted(n for n, o in zip(names, owner) if o == b)) for b in set(owner.tolist())}
    out = []
    for (b, x, p), ins in zip(candidates, candidate_inputs):
        rot, sin2 = local_frames(beads[:, b], beads[:, x], beads[:, p])
        # a frame whose three beads are nearly collinear in most training molecules carries no direction
        if np.median(sin2) <= MIN_SIN2:
            continue
        outs = np.array([names.index(n) for n in atoms_of[b]])
        ok = np.isfinite(rot).all(axis=(1, 2))
        origin = beads[ok, b][:, None]
        out.append({"frame": (b, x, p), "inputs": ins, "outputs": outs,
                    "signature": (tuple((mapping.beads[k], atoms_of.get(k, ())) for k in (b, x, p, *ins)), atoms_of[b]),
                    "features": np.einsum("nij,nkj->nki", rot[ok], beads[ok][:, ins] - origin).reshape(ok.sum(), -1),
                    "targets": np.einsum("nij,nkj->nki", rot[ok], atoms[ok][:, outs] - origin).reshape(ok.sum(), -1)})
    return out


def _ridge(features: np.ndarray, targets: np.ndarray, ridge: float) -> tuple[np.ndarray, float]:
    """(affine map ``(f + 1, t)``: features and 1 -> targets, RMS error per atom of the fit, A)."""
    mu, sd = features.mean(0), features.std(0) + 1e-6
    z = (features - mu) / sd
    t_mean = targets.mean(0)
    w = np.linalg.solve(z.T @ z + ridge * np.eye(z.shape[1]), z.T @ (targets - t_mean))
    # folded: atoms = features @ (w / sd) + (t_mean - (mu / sd) @ w)
    affine = np.vstack([w / sd[:, None], (t_mean - (mu / sd) @ w)[None]])
    residual = z @ w + t_mean - targets
    return affine, max(float(np.sqrt((residual ** 2).sum(1).mean() / (targets.shape[1] // 3))), 1e-3)


def fit_types(data: dict, radius: int = RADIUS, ridge: float = RIDGE) -> dict[str, MoleculeFrames]:
    """Regressions of several types at once, ``data`` ``{name: (mapping, beads (n, n_beads, 3),
    heavy atoms (n, n_heavy, 3))}`` (A, :func:`design` order); frames with one signature
    (:func:`_frame_samples`) are fitted on the molecules of every type that has them."""
    samples = {name: _frame_samples(m, b, a, radius) for name, (m, b, a) in data.items()}
    pooled: dict = defaultdict(list)
    for frames in samples.values():
        for f in frames:
            pooled[f["signature"]].append(f)
    fitted = {sig: _ridge(np.concatenate([f["features"] for f in group]),
                          np.concatenate([f["targets"] for f in group]), ridge) for sig, group in pooled.items()}
    out = {}
    for name, frames in samples.items():
        if not frames:
            continue
        mapping = data[name][0]
        n_in, n_out = max(len(f["inputs"]) for f in frames), max(len(f["outputs"]) for f in frames)
        inputs = np.full((len(frames), n_in), -1, np.int64)
        outputs = np.full((len(frames), n_out), -1, np.int64)
        weights = np.zeros((len(frames), 3 * n_in + 1, 3 * n_out))
        error = np.zeros(len(frames))
        for row, f in enumerate(frames):
            affine, error[row] = fitted[f["signature"]]
            k, m = len(f["inputs"]), len(f["outputs"])
            inputs[row, :k], outputs[row, :m] = f["inputs"], f["outputs"]
            weights[row, :3 * k, :3 * m], weights[row, -1, :3 * m] = affine[:-1], affine[-1]
        out[name] = MoleculeFrames(tuple(mapping.beads), tuple(design(mapping, radius)[0]),
                                   np.array([f["frame"] for f in frames], np.int64), inputs, outputs, weights, error)
    return out


def fit_molecule(mapping, beads: np.ndarray, atoms: np.ndarray, radius: int = RADIUS,
                 ridge: float = RIDGE) -> MoleculeFrames | None:
    """The regression of one type alone (:func:`fit_types`); None when no bead has a frame."""
    return fit_types({mapping.name: (mapping, beads, atoms)}, radius, ridge).get(mapping.name)


def collect(files, mapping: MappingSet) -> tuple[dict, dict]:
    """(``{type: [beads (n, n_beads, 3), atoms (n, n_heavy, 3)]}``, ``{type: mapping}``) of the
    non-protein molecules of all-atom ``files`` (A), atoms in :func:`design` order."""
    data: dict = defaultdict(lambda: [[], []])
    mappings: dict = {}
    layouts: dict = {}
    for path in files:
        system, xyz, beads = mapped_chain(str(path), mapping)
        for m in {id(r.mapping): r.mapping for r in system.residues}.values():
            if m.name not in PROTEIN_RESIDUES and m.name not in mappings:
                mappings[m.name] = m
                layouts[m.name] = SimpleNamespace(bead_names=tuple(m.beads), atom_names=tuple(design(m)[0]))
        for name, g in frame_groups(system, layouts).items():
            data[name][0].extend(beads[g["beads"]])
            data[name][1].extend(xyz[g["atoms"]])
    return {n: (np.array(b), np.array(a)) for n, (b, a) in data.items()}, mappings


def build_lipid_frames(files, mapping: str | MappingSet = "martini3_lipids", radius: int = RADIUS,
                       ridge: float = RIDGE, min_molecules: int = MIN_MOLECULES, info: dict | None = None,
                       progress=None, pool: bool = True) -> LipidFrames:
    """Fit every non-protein type with at least ``min_molecules`` training molecules in ``files``;
    ``pool``: frames two types share (:func:`fit_types`) fitted on both types' molecules."""
    ms = mapping if isinstance(mapping, MappingSet) else MappingSet.load(mapping)
    data, mappings = collect(files, ms)
    enough = {}
    for name in sorted(data):
        if len(data[name][0]) >= min_molecules:
            enough[name] = (mappings[name], *data[name])
        elif progress:
            progress(f"{name}: {len(data[name][0])} molecules, fewer than {min_molecules}: left to the network")
    molecules = fit_types(enough, radius, ridge) if pool else {
        name: m for name, args in enough.items() if (m := fit_molecule(*args, radius, ridge)) is not None}
    if progress:
        for name, m in molecules.items():
            progress(f"{name}: {len(data[name][0])} molecules, {len(m.frames)} frames, "
                     f"training RMS {float(np.sqrt(np.mean(m.error ** 2))):.3f} A per frame")
    meta = dict(info or {}, mapping_set=ms.name, mapping_hash=ms.files_hash, radius=radius, ridge=ridge, pooled=pool,
                training_molecules={n: len(data[n][0]) for n in molecules})
    return LipidFrames(molecules, meta)


def evaluate_lipid_frames(frames: LipidFrames, files, mapping: str | MappingSet = "martini3_lipids") -> dict[str, dict]:
    """Per type: heavy RMSD per molecule (mean, p95, n) of the regression alone on mapped ``files``."""
    ms = mapping if isinstance(mapping, MappingSet) else MappingSet.load(mapping)
    out: dict = defaultdict(list)
    for path in files:
        system, xyz, beads = mapped_chain(str(path), ms)
        for name, g in frame_groups(system, frames.molecules).items():
            pred, got = frames.molecules[name].predict(beads[g["beads"]])
            err = np.where(got[..., None], pred - xyz[g["atoms"]], 0.0)
            out[name] += np.sqrt((err ** 2).sum(-1).sum(1) / got.sum(1)).tolist()
    return {n: {"mean": float(np.mean(v)), "p95": float(np.percentile(v, 95)), "n": len(v)} for n, v in out.items()}

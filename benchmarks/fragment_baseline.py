#!/usr/bin/env python
"""Non-learned fragment-lookup baseline for Martini 3 -> all-atom protein backmapping.

For every residue the training-set residue of the same type whose local bead
environment superposes best is looked up, and its heavy atoms are placed with
that superposition.  This is the reference a learned model has to beat.

Definitions
-----------
* **Key** of residue i: its own beads (BB, SC1, ... in mapping order), then the BB
  bead of residue i-1 and the BB bead of residue i+1 when they exist in the same
  chain and are bonded (BB-BB < 4.5 A).  Residues at termini / chain breaks get a
  key without the missing neighbour; there is one library per
  (residue type, has_prev, has_next).
* **Library**: every *complete* residue (all non-optional heavy atoms present) of
  the selected training chains, stored as its key bead coordinates and its heavy
  atom coordinates, both centred on the key's centroid.
* **Query**: a rotation-invariant descriptor (the sorted pairwise distances of
  the key beads) pre-filters ``--n-candidates`` library entries with a KD-tree;
  the entry with the smallest key RMSD after optimal superposition (Kabsch,
  batched SVD, reflections excluded) wins, and its atoms are placed with that
  superposition.  Martini 3 protein beads never share atoms between residues, so
  the structure is the union of the placed residues.
* When a (type, has_prev, has_next) library has fewer than ``--min-library``
  entries, library residues with *more* context (e.g. internal residues for a
  terminal query) are added, using only the key beads the query has.

Metrics come from :func:`openmm_herobm.evaluation.evaluate` (no superposition,
heavy atoms; clashes, CA chirality, cis peptides); a small built-in fallback is
used if that module is unavailable.

Example::

    python benchmarks/fragment_baseline.py \
        --train-dir ../shared/data/proteins/train --test-dir ../shared/data/proteins/test \
        --n-train-chains 400 --n-test-chains 40 --out benchmarks/results/fragment_baseline.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import mdtraj
import numpy as np
from _common import summarise
from scipy.spatial import cKDTree

from openmm_herobm.io import load_structure, save_structure
from openmm_herobm.mapping import MappingSet, SystemMapping

try:  # another engineer owns the evaluation module; fall back if it is missing
    from openmm_herobm.evaluation import evaluate as _evaluate
except Exception:  # pragma: no cover - depends on the checkout
    _evaluate = None

BB_LINK_A = 4.5  # BB-BB distance below which consecutive residues count as bonded
RESNAME_ALIASES = {
    **dict.fromkeys(("HID", "HIE", "HIP", "HSD", "HSE", "HSP"), "HIS"),
    **dict.fromkeys(("CYX", "CYM"), "CYS"),
    "ASH": "ASP",
    "GLH": "GLU",
    "LYN": "LYS",
}
BACKBONE = ("N", "CA", "C", "O")
EXACT_KEY_A = 0.01  # key RMSD below this: the very same residue coordinates are in the library
DUPLICATE_FRAC = 0.5  # chains with more exact key matches than this are copies of training chains


# --------------------------------------------------------------------------- types
@dataclass
class ResidueType:
    """Heavy atoms (non-optional) of one residue type, as the mapping names them."""

    name: str  # library type: canonical residue name when beads/atoms agree, else the mapping name
    beads: tuple[str, ...]
    atom_index: np.ndarray  # index of each heavy atom in mapping.atoms
    atom_names: tuple[str, ...]
    elements: tuple[str, ...]


class TypeTable:
    def __init__(self, ms: MappingSet):
        self.ms = ms
        self._cache: dict[str, ResidueType] = {}

    def _raw(self, mapping):
        idx = [i for i, a in enumerate(mapping.atoms) if not a.is_hydrogen and not a.optional]
        return (tuple(mapping.beads), np.array(idx, np.int64),
                tuple(mapping.atoms[i].name for i in idx), tuple(mapping.atoms[i].element for i in idx))

    def get(self, mapping) -> ResidueType:
        t = self._cache.get(mapping.name)
        if t is None:
            beads, idx, names, elements = self._raw(mapping)
            name = mapping.name
            canon = RESNAME_ALIASES.get(mapping.name)
            cm = self.ms.for_residue(canon) if canon else None
            if cm is not None:
                cb, _, cn, _ = self._raw(cm)
                if cb == beads and cn == names:
                    name = canon  # HIE/HID/... share the HIS library
            t = ResidueType(name, beads, idx, names, elements)
            self._cache[mapping.name] = t
        return t


# --------------------------------------------------------------------------- chains
@dataclass
class Chain:
    path: str
    traj: mdtraj.Trajectory
    system: SystemMapping
    xyz: np.ndarray  # (n_atoms, 3) A
    beads: np.ndarray  # (n_beads, 3) A
    types: list[ResidueType]
    has_prev: np.ndarray
    has_next: np.ndarray
    bb: np.ndarray  # (n_res,) CG index of each residue's BB bead


def load_chain(path: str, ms: MappingSet, types: TypeTable) -> Chain:
    traj = load_structure(path)
    # a few chains keep selenomethionine's SE under MET (the data README says SE -> SD)
    for atom in traj.topology.atoms:
        if atom.name == "SE" and atom.residue.name == "MET":
            atom.name = "SD"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        system = SystemMapping.from_atomistic(traj.topology, ms, unmapped="drop", incomplete="skip",
                                              source=os.path.basename(path))
    xyz = traj.xyz[0].astype(np.float64) * 10.0
    beads = system.map(xyz)
    res = system.residues
    rtypes = [types.get(r.mapping) for r in res]
    bb = np.array([r.beads[r.mapping.beads.index("BB")] for r in res], np.int64)
    chain_of = np.array([system.cg_topology.residue(r.cg_residue).chain.index for r in res])
    d = np.linalg.norm(beads[bb[1:]] - beads[bb[:-1]], axis=1)
    link = (chain_of[1:] == chain_of[:-1]) & (d < BB_LINK_A)
    has_prev = np.concatenate([[False], link])
    has_next = np.concatenate([link, [False]])
    return Chain(path, traj, system, xyz, beads, rtypes, has_prev, has_next, bb)


def key_of(chain: Chain, i: int, use_prev: bool, use_next: bool) -> np.ndarray:
    parts = [chain.beads[chain.system.residues[i].beads]]
    if use_prev:
        parts.append(chain.beads[chain.bb[i - 1]][None])
    if use_next:
        parts.append(chain.beads[chain.bb[i + 1]][None])
    return np.concatenate(parts)


def descriptor(keys: np.ndarray, kind: str = "sorted") -> np.ndarray:
    """Pairwise distances of the key beads, (..., k(k-1)/2): sorted (permutation-invariant,
    the default) or in bead order ("ordered"; beads are labelled, so this is also valid)."""
    k = keys.shape[-2]
    iu, ju = np.triu_indices(k, 1)
    d = np.linalg.norm(keys[..., iu, :] - keys[..., ju, :], axis=-1)
    return np.sort(d, axis=-1) if kind == "sorted" else d


# --------------------------------------------------------------------------- library
@dataclass
class RawEntries:
    """Complete training residues of one type, with their full available context."""

    own: list = field(default_factory=list)  # (n_own, 3)
    prev: list = field(default_factory=list)  # (3,) or NaN
    nxt: list = field(default_factory=list)
    atoms: list = field(default_factory=list)  # (n_heavy, 3)


@dataclass
class Library:
    keys: np.ndarray  # (n, k, 3), centred
    atoms: np.ndarray  # (n, n_heavy, 3), centred on the key centroid
    desc: np.ndarray
    tree: cKDTree | None
    exact: bool  # built from the exact context only


class FragmentLibrary:
    def __init__(self, min_library: int = 50, descriptor_kind: str = "sorted"):
        self.descriptor_kind = descriptor_kind
        self.raw: dict[str, RawEntries] = {}
        self.arrays: dict[str, dict[str, np.ndarray]] = {}
        self.min_library = min_library
        self._libs: dict[tuple[str, bool, bool], Library | None] = {}
        self.n_incomplete_skipped = 0

    def add_chain(self, chain: Chain) -> int:
        added = 0
        nan3 = np.full(3, np.nan)
        for i, (res, t) in enumerate(zip(chain.system.residues, chain.types)):
            atom_ix = res.atoms[t.atom_index]
            if (atom_ix < 0).any():
                self.n_incomplete_skipped += 1
                continue
            e = self.raw.setdefault(t.name, RawEntries())
            e.own.append(chain.beads[res.beads])
            e.prev.append(chain.beads[chain.bb[i - 1]] if chain.has_prev[i] else nan3)
            e.nxt.append(chain.beads[chain.bb[i + 1]] if chain.has_next[i] else nan3)
            e.atoms.append(chain.xyz[atom_ix])
            added += 1
        return added

    def finalize(self) -> None:
        for name, e in self.raw.items():
            self.arrays[name] = {
                "own": np.asarray(e.own), "prev": np.asarray(e.prev),
                "next": np.asarray(e.nxt), "atoms": np.asarray(e.atoms),
            }
        self.raw = {}

    def size(self) -> int:
        return int(sum(len(a["own"]) for a in self.arrays.values()))

    def context_counts(self) -> dict[str, int]:
        out = {"internal": 0, "no_prev": 0, "no_next": 0, "isolated": 0}
        for a in self.arrays.values():
            hp, hn = ~np.isnan(a["prev"][:, 0]), ~np.isnan(a["next"][:, 0])
            out["internal"] += int((hp & hn).sum())
            out["no_prev"] += int((~hp & hn).sum())
            out["no_next"] += int((hp & ~hn).sum())
            out["isolated"] += int((~hp & ~hn).sum())
        return out

    def library(self, name: str, use_prev: bool, use_next: bool) -> Library | None:
        k = (name, use_prev, use_next)
        if k not in self._libs:
            self._libs[k] = self._build(name, use_prev, use_next)
        return self._libs[k]

    def _build(self, name, use_prev, use_next) -> Library | None:
        a = self.arrays.get(name)
        if a is None:
            return None
        hp, hn = ~np.isnan(a["prev"][:, 0]), ~np.isnan(a["next"][:, 0])
        sel = (hp == use_prev) & (hn == use_next)
        exact = True
        if sel.sum() < self.min_library:  # borrow residues with more context
            sel = (hp | (not use_prev)) & (hn | (not use_next))
            exact = False
        if not sel.any():
            return None
        parts = [a["own"][sel]]
        if use_prev:
            parts.append(a["prev"][sel][:, None])
        if use_next:
            parts.append(a["next"][sel][:, None])
        keys = np.concatenate(parts, axis=1)
        centre = keys.mean(axis=1, keepdims=True)
        keys = keys - centre
        atoms = a["atoms"][sel] - centre
        desc = descriptor(keys, self.descriptor_kind)
        tree = cKDTree(desc) if desc.shape[1] > 0 else None
        return Library(keys, atoms, desc, tree, exact)


# --------------------------------------------------------------------------- kabsch
def batched_kabsch(p: np.ndarray, q: np.ndarray):
    """Rotations R (..., 3, 3) with p @ R ~ q (row vectors, both centred), and the RMSD."""
    h = np.einsum("...ki,...kj->...ij", p, q)
    u, s, vt = np.linalg.svd(h)
    d = np.sign(np.linalg.det(u @ vt))
    d = np.where(d == 0, 1.0, d)
    u = u.copy()
    u[..., :, 2] *= d[..., None]  # U diag(1, 1, d) Vt: no reflections
    r = u @ vt
    k = p.shape[-2]
    s_corr = s[..., 0] + s[..., 1] + d * s[..., 2]
    msd = ((p ** 2).sum((-1, -2)) + (q ** 2).sum((-1, -2)) - 2.0 * s_corr) / k
    return r, np.sqrt(np.clip(msd, 0.0, None))


# --------------------------------------------------------------------------- predict
def predict_chain(chain: Chain, lib: FragmentLibrary, n_candidates: int):
    """Heavy atom coordinates per residue (list of (n_heavy, 3) arrays or None), and stats."""
    n = len(chain.system.residues)
    groups: dict[tuple[str, bool, bool], list[int]] = {}
    for i, t in enumerate(chain.types):
        groups.setdefault((t.name, bool(chain.has_prev[i]), bool(chain.has_next[i])), []).append(i)
    out: list[np.ndarray | None] = [None] * n
    key_rmsd = np.full(n, np.nan)
    borrowed = 0
    for (name, hp, hn), idx in groups.items():
        L = lib.library(name, hp, hn)
        if L is None:
            continue
        if not L.exact:
            borrowed += len(idx)
        keys = np.stack([key_of(chain, i, hp, hn) for i in idx])
        centre = keys.mean(axis=1, keepdims=True)
        q = keys - centre
        c = min(n_candidates, len(L.keys))
        if L.tree is not None:
            _, cand = L.tree.query(descriptor(q, lib.descriptor_kind), k=c)
            cand = np.asarray(cand).reshape(len(idx), c)
        else:  # a one-bead key: no shape information at all
            cand = np.broadcast_to(np.arange(c), (len(idx), c))
        r, rmsd = batched_kabsch(L.keys[cand], q[:, None])  # (m, c, 3, 3), (m, c)
        best = np.argmin(rmsd, axis=1)
        m = np.arange(len(idx))
        rb = r[m, best]
        placed = np.einsum("mai,mij->maj", L.atoms[cand[m, best]], rb) + centre
        for j, i in enumerate(idx):
            out[i] = placed[j]
        key_rmsd[idx] = rmsd[m, best]
    return out, key_rmsd, borrowed


# --------------------------------------------------------------------------- output
def _element(symbol: str):
    return mdtraj.element.get_by_symbol(symbol)


def build_trajectories(chain: Chain, placed):
    """(prediction, reference) trajectories with the mapping's atom names, in nm.

    Both hold the mapped residues of the reference in its order and numbering; the
    reference keeps the heavy atoms present in the file (OXT included), named as the
    mapping names them, so atom matching never depends on naming conventions.
    """
    top_p, top_r = mdtraj.Topology(), mdtraj.Topology()
    xp, xr = [], []
    chains_p, chains_r = {}, {}
    aa_top = chain.system.aa_topology
    for res, t, pos in zip(chain.system.residues, chain.types, placed):
        aa_res = aa_top.residue(res.aa_residue)
        ci = aa_res.chain.index
        if ci not in chains_p:
            cid = getattr(aa_res.chain, "chain_id", None)
            chains_p[ci] = top_p.add_chain(chain_id=cid)
            chains_r[ci] = top_r.add_chain(chain_id=cid)
        rp = top_p.add_residue(aa_res.name, chains_p[ci], resSeq=aa_res.resSeq)
        rr = top_r.add_residue(aa_res.name, chains_r[ci], resSeq=aa_res.resSeq)
        code = getattr(aa_res, "insertion_code", "")
        if code:
            rp.insertion_code = rr.insertion_code = code
        if pos is not None:
            for nm, el, x in zip(t.atom_names, t.elements, pos):
                top_p.add_atom(nm, _element(el), rp)
                xp.append(x)
        for ai, a in enumerate(res.mapping.atoms):
            if a.is_hydrogen or res.atoms[ai] < 0:
                continue
            top_r.add_atom(a.name, _element(a.element), rr)
            xr.append(chain.xyz[res.atoms[ai]])
    top_p.create_standard_bonds()
    top_r.create_standard_bonds()
    pred = mdtraj.Trajectory(np.asarray(xp, np.float32)[None] / 10.0, top_p)
    ref = mdtraj.Trajectory(np.asarray(xr, np.float32)[None] / 10.0, top_r)
    return pred, ref


def _fallback_evaluate(pred: mdtraj.Trajectory, ref: mdtraj.Trajectory) -> dict:
    """RMSD (no superposition), cis non-proline peptides and CA chirality errors."""
    def index(t):
        return {(a.residue.index, a.name): a.index for a in t.topology.atoms}

    ip, ir = index(pred), index(ref)
    common = [k for k in ip if k in ir]
    xp = pred.xyz[0].astype(np.float64) * 10
    xr = ref.xyz[0].astype(np.float64) * 10
    d2 = np.array([((xp[ip[k]] - xr[ir[k]]) ** 2).sum() for k in common])
    names = np.array([k[1] for k in common])
    bb = np.isin(names, BACKBONE)
    sc = ~bb & (names != "OXT")

    def rms(x):
        return float(np.sqrt(x.mean())) if x.size else None

    out = {"rmsd_heavy": rms(d2), "rmsd_backbone": rms(d2[bb]), "rmsd_sidechain": rms(d2[sc])}
    res = list(pred.topology.residues)
    chir = 0
    for r in res:
        g = {n: ip.get((r.index, n)) for n in ("CA", "N", "C", "CB")}
        if None in g.values():
            continue
        c = xp[g["CA"]]
        chir += float(np.dot(xp[g["N"]] - c, np.cross(xp[g["C"]] - c, xp[g["CB"]] - c))) <= 0
    cis = 0
    for r0, r1 in zip(res[:-1], res[1:]):
        if r0.chain.index != r1.chain.index:
            continue
        ids = [ip.get((r0.index, "CA")), ip.get((r0.index, "C")), ip.get((r1.index, "N")), ip.get((r1.index, "CA"))]
        if None in ids or np.linalg.norm(xp[ids[1]] - xp[ids[2]]) > 2.0:
            continue
        b0, b1, b2 = xp[ids[1]] - xp[ids[0]], xp[ids[2]] - xp[ids[1]], xp[ids[3]] - xp[ids[2]]
        n1, n2 = np.cross(b0, b1), np.cross(b1, b2)
        m = np.cross(n1, b1 / np.linalg.norm(b1))
        omega = np.degrees(np.arctan2(np.dot(m, n2), np.dot(n1, n2)))
        cis += abs(omega) < 30 and RESNAME_ALIASES.get(r1.name, r1.name) != "PRO"
    out["chirality_errors_ca"] = int(chir)
    out["cis_peptides_nonpro"] = int(cis)
    return out


PER_CHAIN_KEYS = (
    "rmsd_heavy", "rmsd_backbone", "rmsd_sidechain", "n_clashes", "clashes_per_1000_atoms",
    "n_clashes_in_ref", "chirality_errors_ca", "chirality_errors_ile_cb", "chirality_errors_thr_cb",
    "cis_peptides_nonpro", "cis_peptides_nonpro_in_ref", "cis_peptides_pro", "n_bonds_out_of_range",
    "bond_length_mae", "bond_angle_mae", "n_atoms_compared", "n_unmatched_pred", "n_unmatched_ref",
)


# --------------------------------------------------------------------------- main
def pick(files: list[str], n: int, seed: int) -> list[str]:
    files = sorted(files)
    if n <= 0 or n >= len(files):
        return files
    rng = np.random.default_rng(seed)
    return sorted(files[i] for i in rng.choice(len(files), size=n, replace=False))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parent
    data = here.parent.parent / "shared" / "data" / "proteins"
    ap.add_argument("--train-dir", default=str(data / "train"))
    ap.add_argument("--test-dir", default=str(data / "test"))
    ap.add_argument("--mapping", default="martini3")
    ap.add_argument("--n-train-chains", type=int, default=400, help="training chains in the library (0 = all)")
    ap.add_argument("--n-test-chains", type=int, default=40, help="test chains to backmap (0 = all)")
    ap.add_argument("--train-seed", type=int, default=0)
    ap.add_argument("--test-seed", type=int, default=1)
    ap.add_argument("--n-candidates", type=int, default=32, help="KD-tree candidates per residue for Kabsch")
    ap.add_argument("--descriptor", choices=("sorted", "ordered"), default="sorted",
                    help="KD-tree prefilter descriptor: sorted or bead-ordered pairwise key distances")
    ap.add_argument("--min-library", type=int, default=50,
                    help="below this many exact-context entries, borrow entries with more context")
    ap.add_argument("--out", default=str(here / "results" / "fragment_baseline.json"))
    ap.add_argument("--save-pdb", metavar="DIR", help="write one backmapped PDB per test chain here")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    def log(*a):
        if not args.quiet:
            print(*a, flush=True)

    ms = MappingSet.load(args.mapping)
    types = TypeTable(ms)
    train = pick([str(p) for p in Path(args.train_dir).glob("*.pdb.gz")], args.n_train_chains, args.train_seed)
    test = pick([str(p) for p in Path(args.test_dir).glob("*.pdb.gz")], args.n_test_chains, args.test_seed)
    if not train or not test:
        print(f"no .pdb.gz files found (train {args.train_dir}: {len(train)}, test {args.test_dir}: {len(test)})",
              file=sys.stderr)
        return 2

    # ---- library
    t0 = time.perf_counter()
    lib = FragmentLibrary(min_library=args.min_library, descriptor_kind=args.descriptor)
    n_train_res = 0
    for k, path in enumerate(train):
        chain = load_chain(path, ms, types)
        n_train_res += len(chain.system.residues)
        lib.add_chain(chain)
        if (k + 1) % 50 == 0:
            log(f"  library: {k + 1}/{len(train)} chains, {sum(len(e.own) for e in lib.raw.values())} residues")
    lib.finalize()
    t_lib = time.perf_counter() - t0
    log(f"library: {lib.size()} complete residues from {len(train)} training chains "
        f"({n_train_res} mapped residues, {lib.n_incomplete_skipped} incomplete skipped) in {t_lib:.1f} s")

    # ---- test chains
    if args.save_pdb:
        os.makedirs(args.save_pdb, exist_ok=True)
    per_chain = []
    t_query = t_eval = 0.0
    n_query_res = n_unplaced = n_borrowed = 0
    key_rmsds = []
    for path in test:
        chain = load_chain(path, ms, types)
        t1 = time.perf_counter()
        placed, key_rmsd, borrowed = predict_chain(chain, lib, args.n_candidates)
        dt = time.perf_counter() - t1
        t_query += dt
        n_query_res += len(placed)
        n_unplaced += sum(p is None for p in placed)
        n_borrowed += borrowed
        key_rmsds.append(key_rmsd[~np.isnan(key_rmsd)])
        pred, ref = build_trajectories(chain, placed)
        name = os.path.basename(path).replace(".pdb.gz", "")
        if args.save_pdb:
            save_structure(pred, os.path.join(args.save_pdb, f"{name}.pdb"))
        t2 = time.perf_counter()
        metrics = _evaluate(pred, ref) if _evaluate is not None else _fallback_evaluate(pred, ref)
        t_eval += time.perf_counter() - t2
        row = {"chain": name, "n_residues": len(placed), "n_skipped_residues": len(chain.system.skipped_residues),
               "key_rmsd_mean": float(np.nanmean(key_rmsd)) if np.isfinite(key_rmsd).any() else None,
               # residues whose key matched a library key exactly: the chain (or a copy) is in train
               "frac_exact_key_match": float(np.mean(key_rmsd[np.isfinite(key_rmsd)] < EXACT_KEY_A))
               if np.isfinite(key_rmsd).any() else None,
               "query_seconds": dt}
        row.update({k: metrics.get(k) for k in PER_CHAIN_KEYS if k in metrics})
        per_chain.append(row)
        log(f"  {name:32s} {len(placed):5d} res  heavy {row['rmsd_heavy']:.3f}  bb {row['rmsd_backbone']:.3f}  "
            f"sc {row['rmsd_sidechain']:.3f}  clashes {row.get('n_clashes', '-')}  "
            f"cis {row.get('cis_peptides_nonpro')}  chir {row.get('chirality_errors_ca')}")

    key_rmsds = np.concatenate(key_rmsds) if key_rmsds else np.zeros(0)
    summary = {k: summarise([r.get(k) for r in per_chain]) for k in PER_CHAIN_KEYS if any(k in r for r in per_chain)}
    duplicates = [r["chain"] for r in per_chain if (r.get("frac_exact_key_match") or 0) > DUPLICATE_FRAC]
    clean = [r for r in per_chain if r["chain"] not in duplicates]
    summary_clean = {k: summarise([r.get(k) for r in clean]) for k in ("rmsd_heavy", "rmsd_backbone", "rmsd_sidechain")}
    totals = {k: int(sum(r.get(k) or 0 for r in per_chain))
              for k in ("cis_peptides_nonpro", "cis_peptides_nonpro_in_ref", "chirality_errors_ca",
                        "chirality_errors_ile_cb", "chirality_errors_thr_cb", "n_clashes", "n_clashes_in_ref")
              if any(k in r for r in per_chain)}
    result = {
        "method": "fragment lookup (per-residue library, sorted-distance KD-tree prefilter, Kabsch on key beads)",
        "metrics_from": "openmm_herobm.evaluation.evaluate" if _evaluate is not None else "built-in fallback",
        "config": {
            "mapping": args.mapping, "train_dir": os.path.abspath(args.train_dir),
            "test_dir": os.path.abspath(args.test_dir), "n_train_chains": len(train), "n_test_chains": len(test),
            "train_seed": args.train_seed, "test_seed": args.test_seed, "n_candidates": args.n_candidates, "descriptor": args.descriptor,
            "min_library": args.min_library, "bb_link_A": BB_LINK_A,
        },
        "library": {
            "n_entries": lib.size(), "n_train_residues_mapped": n_train_res,
            "n_incomplete_skipped": lib.n_incomplete_skipped, "by_context": lib.context_counts(),
            "by_type": {k: int(len(v["own"])) for k, v in sorted(lib.arrays.items())},
            "build_seconds": t_lib,
        },
        "n_test_residues": n_query_res,
        "n_unplaced_residues": n_unplaced,
        "n_residues_from_borrowed_context": n_borrowed,
        "key_rmsd_A": summarise(key_rmsds.tolist()),
        "query_ms_per_residue": 1000.0 * t_query / max(n_query_res, 1),
        "eval_seconds": t_eval,
        "summary": summary,
        "duplicate_chains": duplicates,
        "summary_without_duplicates": summary_clean,
        "totals": totals,
        "per_chain": per_chain,
        "test_chains": [os.path.basename(p) for p in test],
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)

    print(f"\nfragment baseline: library {lib.size()} residues ({len(train)} train chains), "
          f"{len(test)} test chains, {n_query_res} residues")
    for k, label in (("rmsd_heavy", "heavy"), ("rmsd_backbone", "backbone"), ("rmsd_sidechain", "side chain")):
        s = summary.get(k)
        if s:
            print(f"  RMSD {label:10s} mean {s['mean']:.3f} A   median {s['median']:.3f} A")
    if duplicates:
        print(f"  {len(duplicates)} test chain(s) are exact copies of library chains "
              f"(> {DUPLICATE_FRAC:.0%} of residues with key RMSD < {EXACT_KEY_A} A): {', '.join(duplicates)}")
        for k, label in (("rmsd_heavy", "heavy"), ("rmsd_backbone", "backbone"), ("rmsd_sidechain", "side chain")):
            s = summary_clean.get(k)
            if s:
                print(f"  without them: RMSD {label:10s} mean {s['mean']:.3f} A   median {s['median']:.3f} A")
    if "n_clashes" in summary:
        print(f"  clashes per chain: mean {summary['n_clashes']['mean']:.1f} "
              f"({summary['clashes_per_1000_atoms']['mean']:.2f} per 1000 heavy atoms); "
              f"total {totals['n_clashes']} (in ref too: {totals.get('n_clashes_in_ref', '-')})")
    print(f"  cis non-Pro peptides: {totals.get('cis_peptides_nonpro')} "
          f"(also cis in ref: {totals.get('cis_peptides_nonpro_in_ref', '-')});  "
          f"CA chirality errors: {totals.get('chirality_errors_ca')}")
    print(f"  key-bead RMSD of the chosen fragment: mean {key_rmsds.mean():.3f} A")
    print(f"  query time {1000.0 * t_query / max(n_query_res, 1):.3f} ms/residue "
          f"(library build {t_lib:.0f} s, evaluation {t_eval:.0f} s); unplaced {n_unplaced}, "
          f"borrowed context {n_borrowed}")
    print(f"  wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

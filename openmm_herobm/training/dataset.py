"""Training data: all-atom chains -> one compressed ``.npz`` of CG inputs and targets.

:func:`build_dataset` maps every all-atom structure of a folder with a mapping set and
stores, per chain (one chain = one input file), the bead positions and types (the
model input), the per-slot vectors that rebuild the atoms hierarchically (the target),
the heavy atoms, bonds, angles and backbone dihedrals (geometry losses) and loss masks.
All chains are concatenated; ``*_offsets`` arrays (CSR style, ``n_chains + 1``) cut
them apart, and every index stored is local to its chain.  Positions are float32
ångström.

:class:`ProteinDataset` reads the file back (no pickle), cuts random spherical patches
for training a strictly local model and collates them into torch tensors.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import tempfile
import time
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ..chemistry import BACKBONE, DISULFIDE_MAX, PEPTIDE_BOND_MAX, standard_residue
from ..errors import HeroBMError, StructureError
from ..geometry import dihedral, disulfide_pairs
from ..io import atom_slice, load_structure, make_whole
from ..mapping import MappingSet, SystemMapping, match_residue_atoms

N_REPORTED_LABELS = 50
_INPUT_SUFFIXES = (".pdb", ".pdb.gz", ".cif", ".cif.gz", ".mmcif", ".mmcif.gz", ".gro", ".gro.gz")


# ====================================================================== report
@dataclass
class DatasetReport:
    """Counts of one :func:`build_dataset` run."""

    output: str = ""
    mapping_name: str = ""
    n_files: int = 0
    n_chains: int = 0
    n_residues: int = 0  # residues in the CG input
    n_beads: int = 0
    n_loss_beads: int = 0
    n_atoms: int = 0  # heavy atoms stored
    n_bonds: int = 0
    n_angles: int = 0
    n_chain_breaks: int = 0  # consecutive residues without a peptide bond (C-N > 2 Å or atoms missing)
    n_incomplete_residues: int = 0  # in the input, excluded from the loss
    n_skipped_residues: int = 0  # missing whole beads: not in the input
    skipped_residues: list[str] = field(default_factory=list)  # first 50 labels
    n_rejected_residues: int = 0  # heavy atoms the mapping does not know: not in the input
    rejected_residues: list[str] = field(default_factory=list)  # first 50 labels with the reason
    n_hydrogens_dropped: int = 0  # hydrogens of mapped residues (those of water etc. go with their residue)
    dropped_residues: dict[str, int] = field(default_factory=dict)  # no mapping: water, ions, ligands
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    seconds: float = 0.0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def summary(self) -> str:
        lines = [
            f"{self.output}: {self.n_chains} chains from {self.n_files} files, mapping {self.mapping_name}, "
            f"{self.seconds:.0f} s",
            f"  {self.n_residues} residues, {self.n_beads} beads ({self.n_loss_beads} in the loss), "
            f"{self.n_atoms} heavy atoms, {self.n_bonds} bonds, {self.n_angles} angles, "
            f"{self.n_chain_breaks} chain breaks",
            f"  {self.n_incomplete_residues} incomplete residues kept in the input but out of the loss",
            f"  {self.n_skipped_residues} residues left out (missing whole beads)"
            + (f": {', '.join(self.skipped_residues[:5])}{' ...' if self.n_skipped_residues > 5 else ''}"
               if self.skipped_residues else ""),
        ]
        if self.n_rejected_residues:
            lines.append(f"  {self.n_rejected_residues} residues left out (unknown heavy atoms): "
                         f"{'; '.join(self.rejected_residues[:3])}")
        dropped = ", ".join(f"{k} x{v}" for k, v in sorted(self.dropped_residues.items(), key=lambda kv: -kv[1]))
        lines.append(f"  {self.n_hydrogens_dropped} hydrogens dropped; residues without mapping dropped: "
                     f"{dropped or 'none'}")
        lines.append(f"  {len(self.failed)} files failed" + "".join(f"\n    {f}: {r}" for f, r in self.failed[:20]))
        return "\n".join(lines)


# ====================================================================== one chain
_WORKER_SET: MappingSet | None = None


def _init_worker(mapping) -> None:
    global _WORKER_SET
    _WORKER_SET = mapping if isinstance(mapping, MappingSet) else MappingSet.load(mapping)


def _worker(path: str):
    """Process one file; never raises (a failure comes back as its reason)."""
    try:
        return path, process_structure(path, _WORKER_SET), None
    except HeroBMError as exc:
        return path, None, str(exc)
    except Exception as exc:  # a bug or an unreadable file must not stop a 1000-chain build
        return path, None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"


def _load(path: str):
    """Every model of a structure file (mdtraj Trajectory, nm), molecules made whole when periodic.

    A multi-model file (e.g. conformations of a ligand) gives one training entry per model.
    """
    traj = load_structure(path)
    if traj.unitcell_lengths is not None and (traj.unitcell_lengths > 2.0).all():
        traj = make_whole(traj)  # e.g. GROMACS bilayer snapshots; a 1 A CRYST1 placeholder is not a box
    return traj


def map_heavy_atoms(traj, ms: MappingSet, stem: str):
    """(heavy-atom trajectory of the mappable residues, its SystemMapping, counts of what was left out).

    Hydrogens and residues the mapping set does not know are dropped; residues with a heavy atom
    the mapping does not know are left out (reported) instead of losing the chain.
    """
    top = traj.topology
    heavy = np.array([a.element is None or a.element.symbol != "H" for a in top.atoms])
    mapped = np.array([ms.for_residue(a.residue.name) is not None for a in top.atoms])
    dropped = Counter(r.name for r in top.residues if ms.for_residue(r.name) is None)
    stats = {"n_hydrogens_dropped": int((~heavy & mapped).sum()), "dropped_residues": dict(dropped),
             "rejected_residues": []}
    keep = heavy & mapped
    # residues with a heavy atom the mapping does not know cannot be mapped; leave them
    # out (reported) instead of losing the chain
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while True:
            sub = atom_slice(traj, np.nonzero(keep)[0])  # keeps insertion codes for residue labels
            try:
                sm = SystemMapping.from_atomistic(sub.topology, ms, unmapped="drop", incomplete="skip", source=stem)
                break
            except StructureError:
                bad = _unmappable_residues(sub.topology, ms)
                if not bad:
                    raise
                kept_index = np.nonzero(keep)[0]
                for res, reason in bad:
                    stats["rejected_residues"].append(f"{stem}: {reason}")
                    keep[kept_index[[a.index for a in res.atoms]]] = False
    return sub, sm, stats


def process_structure(path: str, ms: MappingSet) -> dict | list[dict]:
    """All arrays of one chain (chain-local indices, Å) and its counts (key ``stats``); a list of
    them, one per model, for a multi-model file."""
    name = os.path.basename(path)
    stem = name.split(".")[0]
    traj = _load(path)
    sub, sm, stats = map_heavy_atoms(traj, ms, stem)
    entries = []
    for frame in range(sub.n_frames):
        xyz = sub.xyz[frame].astype(np.float64) * 10.0  # nm -> Å
        out = _chain_arrays(sm, xyz)
        frame_stats = dict(stats, **out.pop("stats"))
        frame_stats["skipped_residues"] = [f"{stem}: {label}" for label in sm.skipped_residues]
        if frame:  # per-file counts are reported once
            frame_stats.update(n_hydrogens_dropped=0, skipped_residues=[], rejected_residues=[], dropped_residues={})
        out["stats"] = frame_stats
        out["name"] = stem if sub.n_frames == 1 else f"{stem}#{frame}"
        entries.append(out)
    return entries[0] if len(entries) == 1 else entries


def _unmappable_residues(top, ms):
    bad = []
    for res in top.residues:
        try:
            match_residue_atoms(res, ms.for_residue(res.name), "")
        except StructureError as exc:
            bad.append((res, str(exc)))
    return bad


def _chain_arrays(sm: SystemMapping, xyz: np.ndarray) -> dict:
    top = sm.aa_topology
    n_atoms, n_res = top.n_atoms, len(sm.residues)

    # --- beads and slots
    bead_pos = sm.map(xyz)
    slot_vector = sm.slot_vectors(xyz, bead_pos)
    slot_atom = np.where(sm.slot_valid, sm.slot_atom, -1)
    reconstructed = np.zeros(n_atoms, bool)
    reconstructed[slot_atom[slot_atom >= 0]] = True

    # --- residues: completeness, backbone atoms, the bead that carries the dihedrals
    residue_complete = np.array([not r.missing for r in sm.residues], bool)
    atom_residue = np.full(n_atoms, -1, np.int64)  # -1: atom of a residue left out (skipped)
    backbone = np.full((n_res, 4), -1, np.int64)  # N CA C O
    bb_bead = np.zeros(n_res, np.int64)
    res_chain = np.zeros(n_res, np.int64)
    is_peptide = np.zeros(n_res, bool)  # its mapping has N and C (lipids have no chain breaks)
    canonical = {}  # atom index -> mapping name (aliases resolved), for bond templates
    mapping_bonds = []  # bonds listed in mapping files (lipids, ligands: no mdtraj template)
    for r, res in enumerate(sm.residues):
        present = res.atoms >= 0
        atom_residue[res.atoms[present]] = r
        for i in np.nonzero(present)[0]:
            canonical[int(res.atoms[i])] = res.mapping.atoms[i].name
        names = [a.name for a in res.mapping.atoms]
        for x, y in res.mapping.bonds:
            mapping_bonds.append((res.atoms[names.index(x)], res.atoms[names.index(y)]))
        is_peptide[r] = "N" in names and "C" in names
        for k, bb in enumerate(BACKBONE):
            if bb in names:
                backbone[r, k] = res.atoms[names.index(bb)]
        beads = res.mapping.beads
        bb_bead[r] = res.beads[beads.index("BB") if "BB" in beads else 0]
        res_chain[r] = top.residue(res.aa_residue).chain.index
    atom_complete = (atom_residue >= 0) & residue_complete[np.clip(atom_residue, 0, None)]
    is_backbone = np.zeros(n_atoms, bool)
    is_backbone[backbone[backbone >= 0]] = True

    # --- peptide links: consecutive kept residues of one chain with C(i)-N(i+1) < 2 Å
    n_at, ca_at, c_at = backbone[:, 0], backbone[:, 1], backbone[:, 2]
    prev_c, this_n = c_at[:-1], n_at[1:]
    link = (res_chain[:-1] == res_chain[1:]) & (prev_c >= 0) & (this_n >= 0)
    dist = np.linalg.norm(xyz[np.clip(prev_c, 0, None)] - xyz[np.clip(this_n, 0, None)], axis=1)
    link &= dist < PEPTIDE_BOND_MAX  # link[r]: residue r bonded to r+1
    n_breaks = int(((res_chain[:-1] == res_chain[1:]) & is_peptide[:-1] & is_peptide[1:] & ~link).sum())

    # --- dihedrals, vectorised: atoms C(i-1) N CA C N(i+1) of every residue
    has_prev = np.concatenate([[False], link])
    has_next = np.concatenate([link, [False]])
    five = np.stack([np.concatenate([[-1], c_at[:-1]]), n_at, ca_at, c_at, np.concatenate([n_at[1:], [-1]])], 1)
    ok = (five >= 0) & reconstructed[np.clip(five, 0, None)]
    phi_ok = has_prev & ok[:, :4].all(1)
    psi_ok = has_next & ok[:, 1:].all(1)
    p = xyz[np.clip(five, 0, None)]
    phi, psi = dihedral(p[:, 0], p[:, 1], p[:, 2], p[:, 3]), dihedral(p[:, 1], p[:, 2], p[:, 3], p[:, 4])
    n_beads = sm.n_beads
    bb_dihedral = np.zeros((n_beads, 4), np.float32)
    bb_dihedral[bb_bead] = np.stack([np.sin(phi) * phi_ok, np.cos(phi) * phi_ok,
                                     np.sin(psi) * psi_ok, np.cos(psi) * psi_ok], 1)
    bb_dihedral_mask = np.zeros((n_beads, 2), bool)
    bb_dihedral_mask[bb_bead] = np.stack([phi_ok, psi_ok], 1)
    bb_dihedral_atoms = np.full((n_beads, 5), -1, np.int64)
    bb_dihedral_atoms[bb_bead] = np.where(np.stack([phi_ok, phi_ok | psi_ok, phi_ok | psi_ok,
                                                    phi_ok | psi_ok, psi_ok], 1), five, -1)

    # --- bonds: residue templates (+ mapping-file bonds) + real peptide bonds + disulfides, loss atoms only
    intra = _template_bonds(top, canonical, {r.aa_residue: r.mapping.name for r in sm.residues})
    peptide = np.stack([prev_c[link], this_n[link]], 1)
    sg = np.array([a.index for a in top.atoms if canonical.get(a.index) == "SG"
                   and getattr(a.element, "symbol", "") == "S"], np.int64)
    ss = np.zeros((0, 2), np.int64)
    if len(sg) > 1:
        i, j = disulfide_pairs(xyz[sg], DISULFIDE_MAX)
        ss = np.stack([sg[i], sg[j]], 1)
    listed = np.array(mapping_bonds, np.int64).reshape(-1, 2)
    bonds = np.concatenate([intra, listed, peptide, ss]).reshape(-1, 2)
    keep = (bonds >= 0).all(1)  # a listed bond may name an absent atom
    bonds = bonds[keep]
    keep = (reconstructed & atom_complete)[bonds].all(1)
    bonds = np.unique(np.sort(bonds[keep], axis=1), axis=0).reshape(-1, 2)
    angles = angles_from_bonds(bonds, n_atoms)

    bead_residue = sm.bead_residue
    out = {
        "bead_pos": bead_pos.astype(np.float32),
        "bead_type": sm.bead_types.astype(np.int16),
        "bead_residue": bead_residue.astype(np.int32),
        "bead_loss_mask": residue_complete[bead_residue],
        "slot_atom": slot_atom.astype(np.int32),
        "slot_vector": slot_vector.astype(np.float32),
        "bb_dihedral": bb_dihedral,
        "bb_dihedral_mask": bb_dihedral_mask,
        "bb_dihedral_atoms": bb_dihedral_atoms.astype(np.int32),
        "atom_pos": xyz.astype(np.float32),
        "atom_is_backbone": is_backbone,
        "atom_residue": atom_residue.astype(np.int32),
        "bonds": bonds.astype(np.int32),
        "angles": angles.astype(np.int32),
        "residue_name": np.array([r.mapping.name for r in sm.residues]),
        "residue_seq": np.array([top.residue(r.aa_residue).resSeq for r in sm.residues], np.int32),
        "residue_complete": residue_complete,
    }
    out["stats"] = {"n_residues": n_res, "n_beads": n_beads, "n_loss_beads": int(out["bead_loss_mask"].sum()),
                    "n_atoms": n_atoms, "n_bonds": len(bonds), "n_angles": len(angles), "n_chain_breaks": n_breaks,
                    "n_incomplete_residues": int((~residue_complete).sum())}
    return out


def _template_bonds(top, canonical: dict[int, str], mapping_names: dict[int, str]) -> np.ndarray:
    """Intra-residue heavy-atom bonds from mdtraj's standard templates.

    ``create_standard_bonds`` matches exact residue and atom names, so it is run on a
    copy named the standard way (HID -> HIS, CYX -> CYS, ILE CD -> CD1, OT1 -> O); its
    inter-residue bonds are discarded (they ignore chain breaks).
    """
    import mdtraj

    std = mdtraj.Topology()
    for chain in top.chains:
        c = std.add_chain()
        for res in chain.residues:
            name = mapping_names.get(res.index, res.name)
            # variants use their standard residue's bond template (mdtraj residues.xml)
            r = std.add_residue(standard_residue(name), c, resSeq=res.resSeq)
            for a in res.atoms:
                std.add_atom(canonical.get(a.index, a.name), a.element, r)
    std.create_standard_bonds()
    pairs = np.array([(a.index, b.index) for a, b in std.bonds if a.residue.index == b.residue.index], np.int64)
    return pairs.reshape(-1, 2)


def angles_from_bonds(bonds: np.ndarray, n_atoms: int) -> np.ndarray:
    """All angles ``(i, j, k)`` with ``i-j`` and ``j-k`` bonded, ``i < k`` (each angle once)."""
    if len(bonds) == 0:
        return np.zeros((0, 3), np.int64)
    directed = np.concatenate([bonds, bonds[:, ::-1]])
    directed = directed[np.argsort(directed[:, 0], kind="stable")]
    degree = np.bincount(directed[:, 0], minlength=n_atoms)
    start = np.concatenate([[0], np.cumsum(degree)[:-1]])
    column = np.arange(len(directed)) - start[directed[:, 0]]
    neighbours = np.full((n_atoms, max(int(degree.max()), 2)), -1, np.int64)  # padded adjacency
    neighbours[directed[:, 0], column] = directed[:, 1]
    out = []
    for a in range(neighbours.shape[1]):
        for b in range(a + 1, neighbours.shape[1]):
            i, k = neighbours[:, a], neighbours[:, b]
            j = np.nonzero((i >= 0) & (k >= 0))[0]
            lo, hi = np.minimum(i[j], k[j]), np.maximum(i[j], k[j])
            out.append(np.stack([lo, j, hi], 1))
    angles = np.concatenate(out)
    return angles[np.lexsort((angles[:, 2], angles[:, 0], angles[:, 1]))]


# ====================================================================== whole dataset
_PER_CHAIN = {  # key -> offsets array that cuts it into chains
    "bead": ("bead_pos", "bead_type", "bead_residue", "bead_loss_mask", "slot_atom", "slot_vector",
             "bb_dihedral", "bb_dihedral_mask", "bb_dihedral_atoms"),
    "atom": ("atom_pos", "atom_is_backbone", "atom_residue"),
    "bond": ("bonds",),
    "angle": ("angles",),
    "residue": ("residue_name", "residue_seq", "residue_complete"),
}


def find_structures(input_dir_or_files) -> list[str]:
    """Structure files (.pdb, .cif, .gro, optionally .gz) of a folder, sorted; or the given files."""
    if isinstance(input_dir_or_files, (str, os.PathLike)):
        path = Path(input_dir_or_files)
        if path.is_dir():
            files = sorted(str(p) for p in path.iterdir() if p.name.lower().endswith(_INPUT_SUFFIXES))
            if not files:
                raise HeroBMError(f"{path}: no structure files (.pdb, .cif, .gro, optionally .gz) in this folder")
            return files
        if not path.exists():
            raise HeroBMError(f"{path}: no such file or folder")
        return [str(path)]
    files = [str(p) for p in input_dir_or_files]
    for f in files:
        if not os.path.isfile(f):
            raise HeroBMError(f"{f}: file not found")
    return files


def build_dataset(input_dir_or_files, mapping: str | MappingSet = "martini3", output: str | os.PathLike = "data.npz",
                  workers: int = 2, limit: int | None = None, progress: bool = False) -> DatasetReport:
    """Map every structure of a folder and write one compressed ``.npz`` (see the module doc).

    Files that cannot be read or mapped are reported in ``DatasetReport.failed``; they
    never stop the build.  ``limit`` takes the first N files (sorted by name).
    """
    start = time.time()
    ms = mapping if isinstance(mapping, MappingSet) else MappingSet.load(mapping)
    files = find_structures(input_dir_or_files)[:limit]
    output = os.fspath(output)
    report = DatasetReport(output=output, mapping_name=ms.name, n_files=len(files))

    chains = []
    if workers > 1 and len(files) > 1:
        # workers load the set by name/path themselves; a MappingSet object is sent as is (fork)
        init_arg = mapping if not isinstance(mapping, MappingSet) else ms
        with multiprocessing.Pool(min(workers, len(files)), _init_worker, (init_arg,)) as pool:
            results = pool.imap(_worker, files, chunksize=2)
            chains = _collect(results, len(files), progress, report)
    else:
        _init_worker(ms)
        chains = _collect(map(_worker, files), len(files), progress, report)
    if not chains:
        raise HeroBMError(f"no structure could be used; {len(report.failed)} failed, first: "
                          f"{report.failed[0][0] if report.failed else '-'}: {report.failed[0][1] if report.failed else ''}")

    skipped = [s for c in chains for s in c["stats"]["skipped_residues"]]
    rejected = [s for c in chains for s in c["stats"]["rejected_residues"]]
    dropped: Counter = Counter()
    for c in chains:
        dropped.update(c["stats"]["dropped_residues"])
    report.n_chains = len(chains)
    for key in ("n_residues", "n_beads", "n_loss_beads", "n_atoms", "n_bonds", "n_angles", "n_chain_breaks",
                "n_incomplete_residues", "n_hydrogens_dropped"):
        setattr(report, key, int(sum(c["stats"][key] for c in chains)))
    report.n_skipped_residues, report.skipped_residues = len(skipped), skipped[:N_REPORTED_LABELS]
    report.n_rejected_residues, report.rejected_residues = len(rejected), rejected[:N_REPORTED_LABELS]
    report.dropped_residues = dict(dropped)

    arrays = {"chain_names": np.array([c["name"] for c in chains])}
    for kind, keys in _PER_CHAIN.items():
        counts = [len(c[keys[0]]) for c in chains]
        arrays[f"{kind}_offsets"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        for key in keys:
            arrays[key] = np.concatenate([c[key] for c in chains])
    anchor, level, weight = ms.slot_tables()
    arrays.update(
        type_slot_anchor=anchor.astype(np.int16), type_slot_level=level.astype(np.int16),
        type_slot_weight=weight.astype(np.float32),
        type_name=np.array([f"{t.residue}:{t.bead}" for t in ms.bead_types]),
        mapping_name=np.array(ms.name), mapping_hash=np.array(ms.files_hash),
        n_bead_types=np.array(ms.n_bead_types, np.int64), max_slots=np.array(ms.max_slots, np.int64),
    )
    report.seconds = time.time() - start
    arrays["report"] = np.array(report.to_json())
    _save_npz(output, arrays)
    return report


def _collect(results, total, progress, report) -> list[dict]:
    if progress:
        from tqdm import tqdm

        results = tqdm(results, total=total, unit="file")
    chains = []
    for path, chain, error in results:
        if chain is None:
            report.failed.append((os.path.basename(path), error))
        elif isinstance(chain, list):  # a multi-model file
            chains.extend(chain)
        else:
            chains.append(chain)
    return chains


def _save_npz(output: str, arrays: dict) -> None:
    """Compressed npz written to a temp file, then moved into place (no partial output)."""
    folder = os.path.dirname(os.path.abspath(output))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{os.path.basename(output)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:  # a file object: numpy appends no '.npz'
            np.savez_compressed(fh, **arrays)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, output)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


# ====================================================================== reading
_TORCH_FLOAT = ("bead_pos", "slot_vector", "slot_weight", "bb_dihedral", "atom_pos", "center")


class ProteinDataset:
    """A dataset written by :func:`build_dataset`, held in memory as numpy arrays.

    >>> ds = ProteinDataset("train.npz")
    >>> batch = collate([ds.sample_patch(rng) for _ in range(8)])
    """

    def __init__(self, path: str | os.PathLike):
        try:
            with np.load(path, allow_pickle=False) as f:
                self.arrays = {k: f[k] for k in f.files}
        except (OSError, ValueError) as exc:
            from ..errors import HeroBMError

            raise HeroBMError(f"{path}: cannot read dataset ({exc}); build it with `herobm dataset`") from None
        a = self.arrays
        self.path = os.fspath(path)
        self.chain_names = a["chain_names"]
        self.mapping_name = str(a["mapping_name"])
        self.mapping_hash = str(a["mapping_hash"])
        self.n_bead_types = int(a["n_bead_types"])
        self.max_slots = int(a["max_slots"])
        self.report = json.loads(str(a["report"]))

    @property
    def n_chains(self) -> int:
        return len(self.chain_names)

    def __len__(self) -> int:
        return self.n_chains

    def n_beads(self, i: int | None = None) -> int:
        off = self.arrays["bead_offsets"]
        return int(off[-1]) if i is None else int(off[i + 1] - off[i])

    def check_mapping(self, ms: MappingSet) -> None:
        """Raise if ``ms`` is not the mapping set the dataset was built with."""
        if ms.files_hash != self.mapping_hash:
            raise HeroBMError(f"{self.path}: built with mapping set {self.mapping_name} ({self.mapping_hash[:12]}), "
                              f"not {ms.name} ({ms.files_hash[:12]}); rebuild the dataset")

    def chain(self, i: int) -> dict:
        """Per-chain arrays (views; indices local to the chain) and the chain's ``name``."""
        if not -self.n_chains <= i < self.n_chains:
            raise IndexError(f"chain {i} out of range ({self.n_chains} chains)")
        i = i % self.n_chains
        a = self.arrays
        out = {"name": str(self.chain_names[i]), "index": i}
        for kind, keys in _PER_CHAIN.items():
            lo, hi = a[f"{kind}_offsets"][i], a[f"{kind}_offsets"][i + 1]
            for key in keys:
                out[key] = a[key][lo:hi]
        return out

    # ------------------------------------------------------------ patches
    def sample_patch(self, rng: np.random.Generator, radius: float = 18.0, cutoff: float = 10.0) -> dict:
        """A random spherical patch: the beads within ``radius`` Å of a random centre bead.

        Chains are drawn with probability proportional to their bead count (a uniformly
        random bead of the whole set is the centre).  ``loss_bead``: within
        ``radius - cutoff`` of the centre and in a complete residue, so a model whose
        receptive field is ``cutoff`` sees exactly what it sees on the full chain.
        """
        if cutoff >= radius:
            raise ValueError(f"cutoff ({cutoff}) must be smaller than radius ({radius}) or no bead is in the loss")
        g = int(rng.integers(self.n_beads()))
        i = int(np.searchsorted(self.arrays["bead_offsets"], g, side="right") - 1)
        c = self.chain(i)
        centre_bead = g - int(self.arrays["bead_offsets"][i])
        centre = c["bead_pos"][centre_bead].astype(np.float64)
        d = np.linalg.norm(c["bead_pos"] - centre, axis=1)
        beads = np.nonzero(d <= radius)[0]
        loss = (d[beads] <= radius - cutoff) & c["bead_loss_mask"][beads]
        return self._patch(c, beads, loss, centre)

    def full_chain(self, i: int) -> dict:
        """The whole chain as one patch (loss beads = ``bead_loss_mask``), centred on its beads."""
        c = self.chain(i)
        beads = np.arange(len(c["bead_pos"]))
        return self._patch(c, beads, c["bead_loss_mask"].copy(), c["bead_pos"].astype(np.float64).mean(0))

    def full_chain_batch(self, i: int) -> dict:
        """:meth:`full_chain` collated into torch tensors (one graph), for validation."""
        return collate([self.full_chain(i)])

    def _patch(self, c: dict, beads: np.ndarray, loss: np.ndarray, centre: np.ndarray) -> dict:
        n_atoms = len(c["atom_pos"])
        slot_atom = c["slot_atom"]
        # atoms that count in the loss: predicted by loss beads only (an atom shared with
        # a non-loss bead gets that bead's truncated-view estimate mixed in)
        in_loss = np.zeros(len(slot_atom), bool)
        in_loss[beads[loss]] = True
        owned = np.zeros(n_atoms + 1, bool)  # last entry absorbs the -1 of empty slots
        owned[slot_atom[in_loss]] = True
        shared_out = np.zeros(n_atoms + 1, bool)
        shared_out[slot_atom[~in_loss]] = True
        atom_loss = (owned & ~shared_out)[:n_atoms]

        sa = slot_atom[beads]
        atoms = np.unique(sa[sa >= 0])
        remap = np.full(n_atoms + 1, -1, np.int64)  # remap[-1] = -1 keeps empty slots empty
        remap[atoms] = np.arange(len(atoms))
        bonds = c["bonds"][atom_loss[c["bonds"]].all(1)]
        angles = c["angles"][atom_loss[c["angles"]].all(1)]

        dih_atoms = c["bb_dihedral_atoms"][beads].astype(np.int64)
        atom_ok = np.append(atom_loss, False)[dih_atoms]  # -1 -> False
        dih_mask = c["bb_dihedral_mask"][beads] & loss[:, None]
        dih_mask &= np.stack([atom_ok[:, :4].all(1), atom_ok[:, 1:].all(1)], 1)

        types = c["bead_type"][beads].astype(np.int64)
        a = self.arrays
        return {
            "bead_pos": (c["bead_pos"][beads] - centre).astype(np.float32),
            "bead_type": types,
            "loss_bead": loss,
            "slot_atom": remap[sa],
            "slot_vector": c["slot_vector"][beads],
            "slot_anchor": a["type_slot_anchor"][types].astype(np.int64),
            "slot_level": a["type_slot_level"][types].astype(np.int64),
            "slot_weight": a["type_slot_weight"][types],
            "bb_dihedral": c["bb_dihedral"][beads],
            "bb_dihedral_mask": dih_mask,
            "bb_dihedral_atoms": remap[dih_atoms],
            "atom_pos": (c["atom_pos"][atoms] - centre).astype(np.float32),
            "atom_is_backbone": c["atom_is_backbone"][atoms],
            "atom_loss": atom_loss[atoms],
            "bonds": remap[bonds],
            "angles": remap[angles],
            "bead_index": beads.astype(np.int64),  # chain-local
            "atom_index": atoms.astype(np.int64),  # chain-local
            "chain": c["index"],
            "center": centre.astype(np.float32),
        }


def collate(patches: list[dict]) -> dict:
    """Concatenate patches into one disjoint graph of torch tensors.

    Atom indices (``slot_atom``, ``bonds``, ``angles``, ``bb_dihedral_atoms``) are
    shifted by each patch's atom offset (-1 stays -1); ``graph_index`` /
    ``atom_graph_index`` give each bead / atom its patch.  The result feeds
    :func:`openmm_herobm.reconstruction.reconstruct` directly (``n_atoms``).
    """
    import torch

    out: dict = {}
    atom_offset = 0
    parts: dict[str, list] = {}
    for g, p in enumerate(patches):
        shift = {}
        for key in ("slot_atom", "bb_dihedral_atoms"):
            shift[key] = np.where(p[key] >= 0, p[key] + atom_offset, -1)
        for key in ("bonds", "angles"):
            shift[key] = p[key] + atom_offset
        for key, value in p.items():
            if key in ("chain", "center"):
                continue
            parts.setdefault(key, []).append(shift.get(key, value))
        parts.setdefault("graph_index", []).append(np.full(len(p["bead_pos"]), g, np.int64))
        parts.setdefault("atom_graph_index", []).append(np.full(len(p["atom_pos"]), g, np.int64))
        atom_offset += len(p["atom_pos"])
    for key, values in parts.items():
        array = np.concatenate(values)
        if key in _TORCH_FLOAT:
            array = array.astype(np.float32)
        elif array.dtype != bool:
            array = array.astype(np.int64)
        out[key] = torch.from_numpy(np.ascontiguousarray(array))
    out["chain"] = torch.tensor([p["chain"] for p in patches], dtype=torch.int64)
    out["center"] = torch.from_numpy(np.stack([p["center"] for p in patches]).astype(np.float32))
    out["n_graphs"] = len(patches)
    out["n_atoms"] = atom_offset
    return out

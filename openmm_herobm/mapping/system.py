"""A mapping set applied to one concrete system.

:class:`SystemMapping` links the atoms of an all-atom topology to the beads of a CG
topology.  It is built from either side:

* :meth:`SystemMapping.from_atomistic` (forward mapping: all-atom -> CG), and
* :meth:`SystemMapping.from_cg` (backmapping: the all-atom topology is created from
  the mapping files, holding the atoms the hierarchy reconstructs).

Everything per-atom is an array: one sparse ``(n_beads, n_atoms)`` weight matrix maps
every frame at once, and ``slot_*`` arrays of shape ``(n_beads, max_slots)`` drive the
hierarchical reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import mdtraj
import numpy as np
import scipy.sparse

from ..chemistry import (
    CG_NAME_ALTERNATIVES,
    CG_NAME_CLASHES,
    FORCEFIELD_NAMES,
    RESIDUE_ALIASES,
)
from ..errors import StructureError
from .mapping_set import MappingSet
from .molecule import MoleculeMapping, element_from_name


def mapping_for_residue(mapping_set: MappingSet, resname: str):
    """The mapping of an all-atom residue name, through :data:`~openmm_herobm.chemistry.RESIDUE_ALIASES`;
    None if none."""
    mapping = mapping_set.for_residue(resname)
    if mapping is None and resname in RESIDUE_ALIASES:
        mapping = mapping_set.for_residue(RESIDUE_ALIASES[resname])
    return mapping


@dataclass
class MappedResidue:
    """One residue of the system and its mapping."""

    aa_residue: int  # index in the all-atom topology
    cg_residue: int  # index in the CG topology
    mapping: MoleculeMapping
    atoms: np.ndarray  # (n_mapping_atoms,) all-atom index of each mapping atom, -1 = absent
    beads: np.ndarray  # (n_mapping_beads,) CG index of each bead
    missing: list[str] = field(default_factory=list)  # required heavy atoms that are absent


def residue_label(residue) -> str:
    chain = residue.chain
    chain_id = getattr(chain, "chain_id", None) or str(chain.index)
    return f"{residue.name} {residue.resSeq}{getattr(residue, 'insertion_code', '') or ''} chain {chain_id}".replace("  ", " ")


def match_residue_atoms(residue, mapping: MoleculeMapping, source: str = "") -> tuple[np.ndarray, list[str]]:
    """Index of each mapping atom in ``residue`` (-1 if absent), and missing heavy atoms.

    Atom-name conventions (PDB, AMBER, CHARMM) are resolved per residue: alias column
    ``k`` of every atom is tried together (so CHARMM's HB1/HB2 become HB2/HB3, not a
    mix), the column matching most atoms wins; remaining names fall back to any alias.
    Unknown hydrogens are ignored (they carry no weight); an unknown heavy atom is an
    error.
    """
    index_of = {a.name: a.index for a in residue.atoms}
    if len(index_of) < residue.n_atoms:  # a repeated heavy atom would silently lose one copy
        seen = set()
        for atom in residue.atoms:
            if atom.name in seen and not _is_hydrogen(atom):
                raise StructureError(f"{source}{residue_label(residue)}: atom {atom.name} appears twice; "
                                     "remove the extra copy (an alternate location?)")
            seen.add(atom.name)
    n_columns = max(len(a.names) for a in mapping.atoms)
    best_k, best_hits = 0, -1
    for k in range(n_columns):
        hits = sum(1 for a in mapping.atoms if a.names[min(k, len(a.names) - 1)] in index_of)
        if hits > best_hits:
            best_k, best_hits = k, hits
    result = np.full(len(mapping.atoms), -1, np.int64)
    used: set[str] = set()
    for i, a in enumerate(mapping.atoms):
        name = a.names[min(best_k, len(a.names) - 1)]
        if name in index_of and name not in used:
            result[i] = index_of[name]
            used.add(name)
    for i, a in enumerate(mapping.atoms):
        if result[i] >= 0:
            continue
        for name in a.names:
            if name in index_of and name not in used:
                result[i] = index_of[name]
                used.add(name)
                break
    for atom in residue.atoms:
        if atom.name in used:
            continue
        if not _is_hydrogen(atom):
            raise StructureError(
                f"{source}{residue_label(residue)}: atom {atom.name} is not in mapping {mapping.name} ({mapping.source}); "
                "rename the atom or add it to the mapping"
            )
    missing = [a.name for i, a in enumerate(mapping.atoms) if result[i] < 0 and not a.is_hydrogen and not a.optional]
    return result, missing


def _is_hydrogen(atom) -> bool:
    """By the element, or by the name when the atom has none."""
    return atom.element.symbol == "H" if atom.element else element_from_name(atom.name) == "H"


class SystemMapping:
    """The correspondence between an all-atom and a CG representation of one system."""

    def __init__(self, mapping_set: MappingSet, aa_topology: mdtraj.Topology, cg_topology: mdtraj.Topology,
                 residues: list[MappedResidue], unmapped: dict[str, int] | None = None):
        self.mapping_set = mapping_set
        self.aa_topology = aa_topology
        self.cg_topology = cg_topology
        self.residues = residues
        #: residue names that had no mapping and were left out, with their counts
        self.unmapped = unmapped or {}
        #: residues left out because whole beads of them were missing (from_atomistic)
        self.skipped_residues: list[str] = []
        n_beads, n_atoms = cg_topology.n_atoms, aa_topology.n_atoms
        s = mapping_set.max_slots

        self.bead_types = np.zeros(n_beads, np.int64)
        self.bead_residue = np.zeros(n_beads, np.int64)  # index into self.residues
        self.slot_atom = np.full((n_beads, s), -1, np.int64)
        self.slot_anchor = np.full((n_beads, s), -1, np.int64)
        self.slot_level = np.zeros((n_beads, s), np.int64)
        self.slot_weight = np.zeros((n_beads, s), np.float64)
        rows, cols, vals = [], [], []
        weights_of: dict[int, np.ndarray] = {}  # per residue type
        for r, res in enumerate(residues):
            if id(res.mapping) not in weights_of:
                weights_of[id(res.mapping)] = res.mapping.bead_weights()
            w = weights_of[id(res.mapping)]
            for k, bead in enumerate(res.mapping.beads):
                b = res.beads[k]
                t = mapping_set.bead_types[mapping_set.bead_type(res.mapping.cg_residue_name, bead)]
                self.bead_types[b] = t.index
                self.bead_residue[b] = r
                valid = t.slot_level > 0
                self.slot_atom[b, valid] = res.atoms[t.slot_atom[valid]]
                self.slot_anchor[b] = t.slot_anchor
                self.slot_level[b] = t.slot_level
                self.slot_weight[b] = t.slot_weight
                present = res.atoms >= 0
                weights = w[k] * present
                total = weights.sum()
                if total <= 0:
                    raise StructureError(
                        f"{residue_label(aa_topology.residue(res.aa_residue))}: none of the atoms of bead {bead} "
                        f"are present; cannot place the bead"
                    )
                nz = np.nonzero(weights)[0]
                rows.extend([b] * len(nz))
                cols.extend(res.atoms[nz].tolist())
                vals.extend((weights[nz] / total).tolist())
        #: sparse (n_beads, n_atoms) matrix; bead positions = weights @ atom positions
        self.weights = scipy.sparse.csr_matrix((vals, (rows, cols)), shape=(n_beads, n_atoms))
        # a slot whose atom or anchor chain is absent cannot be used (e.g. missing atoms)
        self.slot_valid = self.slot_atom >= 0
        for _ in range(int(self.slot_level.max(initial=0))):
            anchor_ok = np.where(self.slot_anchor >= 0,
                                 np.take_along_axis(self.slot_valid, np.clip(self.slot_anchor, 0, None), axis=1), True)
            self.slot_valid &= anchor_ok

    # ------------------------------------------------------------------ building
    @classmethod
    def from_atomistic(cls, topology: mdtraj.Topology, mapping_set: MappingSet, unmapped: str = "fail",
                       source: str = "", incomplete: str = "error") -> "SystemMapping":
        """Map an all-atom topology: every residue must have a mapping (or ``unmapped='drop'``).

        Residues with missing heavy atoms are mapped from the atoms present (listed in
        :attr:`incomplete_residues`); a residue missing *all* atoms of a bead cannot be
        mapped: ``incomplete='error'`` raises, ``'skip'`` leaves the residue out (listed
        in :attr:`skipped_residues`).
        """
        source = f"{source}: " if source else ""
        cg_top = mdtraj.Topology()
        residues: list[MappedResidue] = []
        dropped: dict[str, int] = {}
        skipped: list[str] = []
        for chain in topology.chains:
            cg_chain = None
            for residue in chain.residues:
                mapping = mapping_for_residue(mapping_set, residue.name)
                if mapping is None:
                    dropped[residue.name] = dropped.get(residue.name, 0) + 1
                    continue
                atoms, missing = match_residue_atoms(residue, mapping, source)
                empty = [b for b, w in zip(mapping.beads, mapping.bead_weights()) if not (w * (atoms >= 0)).any()]
                if empty:
                    if incomplete == "skip":
                        skipped.append(residue_label(residue))
                        continue
                    raise StructureError(
                        f"{source}{residue_label(residue)}: bead(s) {', '.join(empty)} have none of their atoms "
                        f"(missing {', '.join(missing)}); complete the residue (e.g. with pdbfixer) or remove it"
                    )
                if cg_chain is None:
                    cg_chain = cg_top.add_chain(chain_id=getattr(chain, "chain_id", None))
                cg_res = cg_top.add_residue(mapping.cg_residue_name, cg_chain, resSeq=residue.resSeq,
                                            segment_id=getattr(residue, "segment_id", ""))
                _set_insertion_code(cg_res, residue)
                beads = np.array([cg_top.add_atom(b, mdtraj.element.virtual, cg_res).index for b in mapping.beads])
                residues.append(MappedResidue(residue.index, cg_res.index, mapping, atoms, beads, missing))
        _check_unmapped(dropped, unmapped, mapping_set, source)
        if not residues:
            raise StructureError(f"{source}no residue of the structure is in mapping set {mapping_set.name}")
        system = cls(mapping_set, topology, cg_top, residues, dropped)
        system.skipped_residues = skipped
        return system

    @classmethod
    def from_cg(cls, cg_topology: mdtraj.Topology, mapping_set: MappingSet, unmapped: str = "fail",
                source: str = "") -> "SystemMapping":
        """Build the all-atom topology a CG topology backmaps to (reconstructed atoms only).

        Raises :class:`StructureError` for a missing or unknown bead; residues without a
        mapping fail unless ``unmapped='drop'``.  Beads of dropped residues are left out
        of the returned mapping's CG topology.
        """
        source = f"{source}: " if source else ""
        aa_top = mdtraj.Topology()
        kept_cg = mdtraj.Topology()
        residues: list[MappedResidue] = []
        dropped: dict[str, int] = {}
        cg_atom_order: list[int] = []
        pending_bonds: list = []
        rebuilt: dict[int, list[int]] = {}
        for chain in cg_topology.chains:
            aa_chain = kept_chain = None
            for residue in chain.residues:
                mapping = _by_beads(mapping_set, residue, mapping_set.for_cg_residue(residue.name))
                if mapping is None:
                    dropped[residue.name] = dropped.get(residue.name, 0) + 1
                    continue
                bead_index = {a.name: a.index for a in residue.atoms}
                if len(bead_index) < residue.n_atoms:  # the last copy would silently win
                    names = [a.name for a in residue.atoms]
                    twice = next(n for n in names if names.count(n) > 1)
                    raise StructureError(f"{source}{residue_label(residue)}: bead {twice} appears twice; "
                                         "remove the extra copy")
                clash = f"; {CG_NAME_CLASHES[residue.name]}" if residue.name in CG_NAME_CLASHES else ""
                for a in residue.atoms:
                    if a.name not in mapping.beads:
                        raise StructureError(f"{source}{residue_label(residue)}: bead {a.name} is not in mapping "
                                             f"{mapping.name} ({mapping.source}), which has beads {mapping.beads}{clash}")
                for b in mapping.beads:
                    if b not in bead_index:
                        raise StructureError(f"{source}{residue_label(residue)}: bead {b} is missing "
                                             f"(mapping {mapping.name} expects {mapping.beads}){clash}")
                if aa_chain is None:
                    aa_chain = aa_top.add_chain(chain_id=getattr(chain, "chain_id", None))
                    kept_chain = kept_cg.add_chain(chain_id=getattr(chain, "chain_id", None))
                aa_res = aa_top.add_residue(FORCEFIELD_NAMES.get(mapping.name, mapping.name), aa_chain,
                                            resSeq=residue.resSeq, segment_id=getattr(residue, "segment_id", ""))
                kept_res = kept_cg.add_residue(residue.name, kept_chain, resSeq=residue.resSeq,
                                               segment_id=getattr(residue, "segment_id", ""))
                _set_insertion_code(aa_res, residue)
                _set_insertion_code(kept_res, residue)
                atoms = np.full(len(mapping.atoms), -1, np.int64)
                by_name = {}
                if id(mapping) not in rebuilt:  # per residue type, not per residue (a 10k-bead frame: 0.2 s)
                    rebuilt[id(mapping)] = mapping.reconstructed_atoms
                for i in rebuilt[id(mapping)]:
                    a = mapping.atoms[i]
                    by_name[a.name] = aa_top.add_atom(a.name, mdtraj.element.get_by_symbol(a.element), aa_res)
                    atoms[i] = by_name[a.name].index
                # non-standard molecules (lipids, ligands) carry their bonds in the mapping
                pending_bonds.extend((by_name[x], by_name[y]) for x, y in mapping.bonds
                                     if x in by_name and y in by_name)
                beads = []
                for b in mapping.beads:
                    cg_atom_order.append(bead_index[b])
                    beads.append(kept_cg.add_atom(b, mdtraj.element.virtual, kept_res).index)
                residues.append(MappedResidue(aa_res.index, kept_res.index, mapping, atoms, np.array(beads)))
        _check_unmapped(dropped, unmapped, mapping_set, source)
        if not residues:
            raise StructureError(f"{source}no residue of the CG structure is in mapping set {mapping_set.name}")
        aa_top.create_standard_bonds()
        existing = {frozenset((a.index, b.index)) for a, b in aa_top.bonds}
        for x, y in pending_bonds:
            if frozenset((x.index, y.index)) not in existing:
                aa_top.add_bond(x, y)
        system = cls(mapping_set, aa_top, kept_cg, residues, dropped)
        #: index of each kept bead in the original CG topology (select input coordinates with it)
        system.cg_input_index = np.array(cg_atom_order, np.int64)
        return system

    # ------------------------------------------------------------------ using
    @property
    def n_beads(self) -> int:
        return self.cg_topology.n_atoms

    @property
    def n_atoms(self) -> int:
        return self.aa_topology.n_atoms

    @property
    def incomplete_residues(self) -> list[MappedResidue]:
        return [r for r in self.residues if r.missing]

    def map(self, xyz: np.ndarray) -> np.ndarray:
        """Bead positions ``(n_frames, n_beads, 3)`` from atom positions ``(n_frames, n_atoms, 3)`` (any unit)."""
        xyz = np.asarray(xyz, dtype=np.float64)
        single = xyz.ndim == 2
        if single:
            xyz = xyz[None]
        n_frames = xyz.shape[0]
        flat = xyz.transpose(1, 0, 2).reshape(self.n_atoms, n_frames * 3)
        beads = (self.weights @ flat).reshape(self.n_beads, n_frames, 3).transpose(1, 0, 2)
        return beads[0] if single else beads

    def slot_vectors(self, xyz: np.ndarray, bead_xyz: np.ndarray | None = None) -> np.ndarray:
        """The vectors the hierarchy needs to rebuild ``xyz``: ``(n_frames, n_beads, max_slots, 3)``.

        Each slot's vector points from its anchor (the bead, or the anchor slot's atom)
        to its atom; invalid slots (``~slot_valid``) are zero.
        """
        xyz = np.asarray(xyz, dtype=np.float64)
        single = xyz.ndim == 2
        if single:
            xyz = xyz[None]
        if bead_xyz is None:
            bead_xyz = self.map(xyz)
        elif bead_xyz.ndim == 2:
            bead_xyz = bead_xyz[None]
        atom_pos = xyz[:, np.clip(self.slot_atom, 0, None)]  # (F, N, S, 3)
        anchor_atom = np.take_along_axis(self.slot_atom, np.clip(self.slot_anchor, 0, None), axis=1)
        anchor_pos = np.where((self.slot_anchor >= 0)[None, :, :, None],
                              xyz[:, np.clip(anchor_atom, 0, None)], bead_xyz[:, :, None, :])
        vectors = np.where(self.slot_valid[None, :, :, None], atom_pos - anchor_pos, 0.0)
        return vectors[0] if single else vectors

    def cg_trajectory(self, xyz_nm: np.ndarray, unitcell_vectors=None, time=None) -> mdtraj.Trajectory:
        """An mdtraj CG trajectory (nm) from all-atom positions in nm."""
        traj = mdtraj.Trajectory(self.map(xyz_nm).astype(np.float32), self.cg_topology, time=time)
        if unitcell_vectors is not None:
            traj.unitcell_vectors = unitcell_vectors
        return traj


def _set_insertion_code(new_residue, old_residue) -> None:
    # mdtraj residues have no insertion code; the PDB reader of openmm_herobm.io
    # attaches one as a plain attribute, and its writer uses it.
    code = getattr(old_residue, "insertion_code", None)
    if code:
        new_residue.insertion_code = code


def _check_unmapped(dropped: dict[str, int], policy: str, mapping_set: MappingSet, source: str) -> None:
    if not dropped:
        return
    listing = ", ".join(f"{n} x{c}" for n, c in sorted(dropped.items()))
    if policy == "fail":
        raise StructureError(f"{source}no mapping in set {mapping_set.name} for residue(s): {listing}; "
                             "add mappings for them or pass unmapped='drop' (--unmapped drop) to leave them out")
    if policy != "drop":
        raise ValueError(f"unmapped must be 'fail' or 'drop', not {policy!r}")
    import warnings

    warnings.warn(f"{source}left out residues with no mapping in set {mapping_set.name}: {listing}", stacklevel=3)


def _by_beads(mapping_set: MappingSet, residue, mapping):
    """The mapping of a CG residue whose name two Martini 3 versions give to different lipids
    (:data:`~openmm_herobm.chemistry.CG_NAME_ALTERNATIVES`): the name's own, or the alternative
    whose beads the residue has (an unmatched residue keeps the name's, whose error names its beads)."""
    alternatives = CG_NAME_ALTERNATIVES.get(residue.name, ())
    if not alternatives or mapping is None:
        return mapping
    beads = {a.name for a in residue.atoms}
    for candidate in (mapping, *(mapping_set.for_cg_residue(n) for n in alternatives)):
        if candidate is not None and set(candidate.beads) == beads:
            return candidate
    return mapping

"""A set of molecule mappings (one folder of YAML files), e.g. ``mappings/martini3``."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import MappingError
from .molecule import MoleculeMapping, load_molecule_mapping

from ..resources import mappings_dir


@dataclass(frozen=True)
class BeadType:
    index: int
    residue: str  # CG residue name
    bead: str
    mapping: MoleculeMapping
    # Slot table, padded to the set's max_slots: atom index in the molecule (-1 =
    # empty slot), anchor slot (-1 = the bead), hierarchy level (0 = empty) and the
    # weight of this bead's estimate for atoms shared between beads.
    slot_atom: np.ndarray
    slot_anchor: np.ndarray
    slot_level: np.ndarray
    slot_weight: np.ndarray


class MappingSet:
    """Molecule mappings looked up by all-atom or CG residue name.

    >>> ms = MappingSet.load("martini3")
    >>> ms.for_residue("PHE").beads
    ['BB', 'SC1', 'SC2', 'SC3']
    """

    def __init__(self, molecules: list[MoleculeMapping], name: str = "custom", files_hash: str = ""):
        self.name = name
        self.files_hash = files_hash
        self.molecules = list(molecules)
        self._by_aa: dict[str, MoleculeMapping] = {}
        self._by_cg: dict[str, MoleculeMapping] = {}
        for mol in self.molecules:
            for resname in (mol.name,) + mol.residue_names:
                other = self._by_aa.get(resname)
                if other is not None:
                    raise MappingError(f"{mol.source}: residue name {resname} is already mapped by {other.source}")
                self._by_aa[resname] = mol
            other = self._by_cg.get(mol.cg_residue_name)
            if other is not None:
                raise MappingError(f"{mol.source}: CG residue name {mol.cg_residue_name} is already used by {other.source}")
            self._by_cg[mol.cg_residue_name] = mol
        self.max_slots = max((len(mol.slots(b)) for mol in self.molecules for b in mol.beads), default=0)
        self.bead_types: list[BeadType] = []
        self._type_index: dict[tuple[str, str], int] = {}
        for mol in sorted(self.molecules, key=lambda m: m.cg_residue_name):
            for bead in mol.beads:
                self._type_index[(mol.cg_residue_name, bead)] = len(self.bead_types)
                self.bead_types.append(self._make_bead_type(len(self.bead_types), mol, bead))

    def _make_bead_type(self, index: int, mol: MoleculeMapping, bead: str) -> BeadType:
        s = self.max_slots
        atom, anchor = np.full(s, -1, np.int64), np.full(s, -1, np.int64)
        level, weight = np.zeros(s, np.int64), np.zeros(s, np.float64)
        for k, slot in enumerate(mol.slots(bead)):
            atom[k], anchor[k], level[k], weight[k] = slot.atom, slot.anchor, slot.level, slot.weight
        return BeadType(index, mol.cg_residue_name, bead, mol, atom, anchor, level, weight)

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, name_or_path: str | Path) -> "MappingSet":
        """Load a shipped set by name (``martini3``, ``ca``, ``martini3_lipids``) or a folder of YAML files."""
        path = Path(name_or_path)
        if not path.is_dir():
            shipped = mappings_dir() / str(name_or_path)
            if not shipped.is_dir():
                available = ", ".join(available_mapping_sets())
                raise MappingError(f"mapping set {name_or_path!r} is neither a folder nor a shipped set ({available})")
            path = shipped
        files = sorted(list(path.glob("*.yaml")) + list(path.glob("*.yml")))
        if not files:
            raise MappingError(f"{path}: no mapping files (*.yaml) in this folder")
        digest = hashlib.sha256()
        for f in files:
            digest.update(f.name.encode())
            digest.update(f.read_bytes())
        return cls([load_molecule_mapping(f) for f in files], name=path.name, files_hash=digest.hexdigest())

    @classmethod
    def combine(cls, *sets: "MappingSet") -> "MappingSet":
        """One set holding the molecules of several (e.g. proteins + lipids)."""
        digest = hashlib.sha256("".join(s.files_hash for s in sets).encode()).hexdigest()
        return cls([m for s in sets for m in s.molecules], name="+".join(s.name for s in sets), files_hash=digest)

    # ------------------------------------------------------------------ lookup
    def for_residue(self, resname: str) -> MoleculeMapping | None:
        """Mapping for an all-atom residue name, or None."""
        return self._by_aa.get(resname)

    def for_cg_residue(self, resname: str) -> MoleculeMapping | None:
        """Mapping for a CG residue name, or None."""
        return self._by_cg.get(resname)

    def bead_type(self, cg_resname: str, bead: str) -> int:
        return self._type_index[(cg_resname, bead)]

    @property
    def n_bead_types(self) -> int:
        return len(self.bead_types)

    def slot_tables(self):
        """``(n_types, max_slots)`` arrays: anchor, level, weight and validity of every slot."""
        anchor = np.stack([t.slot_anchor for t in self.bead_types])
        level = np.stack([t.slot_level for t in self.bead_types])
        weight = np.stack([t.slot_weight for t in self.bead_types])
        return anchor, level, weight

    def __repr__(self) -> str:
        return f"<MappingSet {self.name}: {len(self.molecules)} molecules, {self.n_bead_types} bead types, {self.max_slots} slots>"


def available_mapping_sets() -> list[str]:
    root = mappings_dir()
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("_")) if root.is_dir() else []

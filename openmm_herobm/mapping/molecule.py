"""One molecule's CG mapping: which atoms form each bead, and the reconstruction hierarchy.

The file format (HEroBM/CGmap compatible, see ``docs/mapping-format.md``)::

    molecule: PHE
    atoms:
      N:        BB   P2AA
      CA:       BB   P1A
      CD1:      SC1,SC2  P2AB,P2AA  1/3,2/3
      HB2,HB1:  SC1

Each atom line is ``NAME[,ALIAS...]: BEAD[,BEAD2...] [tokens]`` where the tokens, in
any order, are

* ``P<level><anchor-id><own-id>`` (one per bead, comma separated): the atom is
  reconstructed from that bead.  ``P1A`` (or ``P0A``) = anchored on the bead itself,
  own id ``A``; ``P2AB`` = anchored on the level-1 atom whose id is ``A`` in the same
  bead, own id ``B``; and so on.  Atoms without a P token are not reconstructed.
* weights ``1/3,2/3`` (one per bead, summing to one): the share of this atom's
  weight that goes to each bead.  Default: an equal share per bead.
* ``!``: the atom carries no weight in any bead position.
* ``CM``: the bead sits exactly on this atom.
* ``?``: the atom is optional (for example a terminal ``OXT``); it is used when present.

Hydrogens never carry weight (see ``docs/mapping-format.md``: the bead definition is
the heavy-atom one, identical to ``martinize2 -ignh``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import accumulate
from pathlib import Path

import yaml
from mdtraj.core import element as md_element

from ..errors import MappingError
from .masses import has_mass

_P_TOKEN = re.compile(r"^P(\d+)([A-Za-z])([A-Za-z])?$")  # ids are letters, so P10AB is unambiguous
_WEIGHT = re.compile(r"^(\d+(\.\d*)?|\.\d+)(/\d+)?$")

# Ion atom names that are element symbols of two letters; any other name takes its
# first letter (``CA`` is the alpha carbon).  A mapping can override with ``elements:``.
_ION_NAMES = {"NA": "Na", "CL": "Cl", "MG": "Mg", "ZN": "Zn", "K": "K", "BR": "Br"}


def element_from_name(name: str) -> str:
    """Guess an element symbol from an atom name (``CA`` is carbon, ``CL`` chlorine)."""
    letters = name.lstrip("0123456789").upper()
    if not letters:
        raise MappingError(f"cannot infer an element from atom name {name!r}; give it under 'elements:'")
    return _ION_NAMES.get(letters, letters[0])


def _known_element(symbol: str) -> bool:
    """A symbol the all-atom topology can take (mdtraj's table, any case)."""
    try:
        md_element.get_by_symbol(symbol)
        return True
    except KeyError:
        return False


def is_hydrogen_name(name: str) -> bool:
    return element_from_name(name) == "H"


@dataclass(frozen=True)
class BeadMembership:
    """How one atom belongs to one bead."""

    bead: str
    weight: float  # share of this atom's weight given to the bead (0 with '!')
    level: int | None = None  # hierarchy level, None = not reconstructed from this bead
    anchor_id: str | None = None  # id of the level-1 atom anchoring it; None = the bead
    own_id: str | None = None

    @property
    def reconstructed(self) -> bool:
        return self.level is not None


@dataclass(frozen=True)
class MappedAtom:
    name: str
    aliases: tuple[str, ...]
    element: str
    memberships: tuple[BeadMembership, ...]
    is_cm: bool = False
    optional: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,) + self.aliases

    @property
    def is_hydrogen(self) -> bool:
        return self.element == "H"

    @property
    def reconstructed(self) -> bool:
        return any(m.reconstructed for m in self.memberships)


@dataclass(frozen=True)
class Slot:
    """One vector the model predicts for a bead: atom ``atom`` placed from ``anchor``.

    ``anchor`` is -1 for the bead itself, else the index of another slot of the
    same bead.  Slots are ordered by level, so anchors always come first.
    """

    atom: int  # index into MoleculeMapping.atoms
    level: int
    anchor: int
    weight: float  # weight of this bead's estimate when the atom is shared


@dataclass
class MoleculeMapping:
    """The mapping of one residue/molecule type (one YAML file)."""

    name: str  # residue name in all-atom structures
    atoms: list[MappedAtom]
    beads: list[str]
    cg_name: str | None = None  # residue name in CG structures, if different
    residue_names: tuple[str, ...] = ()  # extra all-atom residue names accepted
    weighting: str = "mass"
    bonds: list[tuple[str, str]] = field(default_factory=list)
    source: str = "<memory>"

    # ----------------------------------------------------------------- queries
    @property
    def cg_residue_name(self) -> str:
        return self.cg_name or self.name

    def atom_index(self, name: str) -> int:
        for i, atom in enumerate(self.atoms):
            if atom.name == name:
                return i
        raise KeyError(name)

    def slots(self, bead: str) -> list[Slot]:
        """The reconstruction slots of ``bead``, ordered by level (anchors first)."""
        entries = []
        for i, atom in enumerate(self.atoms):
            for m in atom.memberships:
                if m.bead == bead and m.reconstructed:
                    entries.append((max(m.level, 1), i, m))
        entries.sort(key=lambda e: (e[0], e[1]))
        # weight of each bead's estimate of a shared atom: its mapping share,
        # renormalised over the beads that reconstruct the atom
        index_of: dict[tuple[int, str], int] = {}
        slots: list[Slot] = []
        for level, i, m in entries:
            rec = [mm for mm in self.atoms[i].memberships if mm.reconstructed]
            total = sum(mm.weight for mm in rec)
            weight = m.weight / total if total > 0 else 1.0 / len(rec)
            if level == 1:
                anchor = -1
            else:
                anchor = index_of[(level - 1, m.anchor_id)]
            index_of[(level, m.own_id)] = len(slots)
            slots.append(Slot(atom=i, level=level, anchor=anchor, weight=weight))
        return slots

    @property
    def reconstructed_atoms(self) -> list[int]:
        return [i for i, a in enumerate(self.atoms) if a.reconstructed]

    @property
    def equivalent_atoms(self) -> list[tuple[int, ...]]:
        """Groups of atom indices whose names may be exchanged without changing the heavy-atom
        structure: heavy atoms of one element, each bonded to no other heavy atom than the same
        parent, with as many hydrogens and in the same beads (the three methyls of a choline, the
        free phosphate or carboxylate oxygens, cholesterol's C26/C27).  No name in such a group
        can be told from the beads (nor, without hydrogens, from the structure), so an RMSD may take
        the best assignment within each group (``benchmarks/lipid_quality.py``).  Needs the
        mapping's ``bonds`` (lipids, ligands); residues without (amino acids) have none."""
        index = {a.name: i for i, a in enumerate(self.atoms)}
        heavy = {i: [] for i, a in enumerate(self.atoms) if not a.is_hydrogen}
        hydrogens = dict.fromkeys(range(len(self.atoms)), 0)
        for x, y in self.bonds:
            i, j = index.get(x), index.get(y)
            if i is None or j is None:
                continue
            for p, q in ((i, j), (j, i)):
                if q in heavy:
                    if p in heavy:
                        heavy[p].append(q)
                    else:
                        hydrogens[q] += 1
        groups: dict[tuple, list[int]] = {}
        for i, parents in heavy.items():
            a = self.atoms[i]
            if len(parents) == 1 and a.reconstructed:
                key = (parents[0], a.element, hydrogens[i], tuple(m.bead for m in a.memberships))
                groups.setdefault(key, []).append(i)
        return [tuple(g) for g in groups.values() if len(g) > 1]

    def bead_weights(self, masses: dict[str, float] | None = None):
        """Dense ``(n_beads, n_atoms)`` matrix of mass x share weights (not normalised:
        :class:`SystemMapping` normalises each row over the atoms present).

        Hydrogens and ``!`` atoms get zero weight; a bead with a ``CM`` atom puts all
        of its weight on it.
        """
        import numpy as np

        from .masses import element_mass

        w = np.zeros((len(self.beads), len(self.atoms)))
        bead_row = {b: k for k, b in enumerate(self.beads)}
        for i, atom in enumerate(self.atoms):
            if atom.is_hydrogen:
                continue
            mass = element_mass(atom.element) if self.weighting == "mass" else 1.0
            for m in atom.memberships:
                w[bead_row[m.bead], i] += mass * m.weight
        for i, atom in enumerate(self.atoms):
            if atom.is_cm:
                for m in atom.memberships:
                    w[bead_row[m.bead]] = 0.0
                    w[bead_row[m.bead], i] = 1.0
        return w

    # ----------------------------------------------------------------- writing
    def to_yaml(self) -> str:
        """Serialise back to the YAML format (levels, ids and weights included)."""
        lines = [f"molecule: {self.name}"]
        if self.cg_name:
            lines.append(f"cg_name: {self.cg_name}")
        if self.residue_names:
            lines.append(f"residue_names: [{', '.join(self.residue_names)}]")
        if self.weighting != "mass":
            lines.append(f"weighting: {self.weighting}")
        lines.append(f"beads: [{', '.join(self.beads)}]")
        lines.append("atoms:")
        width = max(len(",".join(a.names)) for a in self.atoms) + 1
        for atom in self.atoms:
            tokens = [",".join(m.bead for m in atom.memberships)]
            if atom.reconstructed:
                tokens.append(",".join(_p_token(m) for m in atom.memberships))
            n = len(atom.memberships)
            weights = [m.weight for m in atom.memberships]
            all_zero = all(w == 0 for w in weights)
            if all_zero:
                tokens.append("!")
            elif any(abs(w - 1.0 / n) > 1e-9 for w in weights):
                tokens.append(",".join(_fraction(w) for w in weights))
            if atom.is_cm:
                tokens.append("CM")
            if atom.optional:
                tokens.append("?")
            key = ",".join(atom.names) + ":"
            lines.append(f"  {key:<{width + 1}} {'  '.join(tokens)}")
        special = {a.name: a.element for a in self.atoms if a.element != element_from_name(a.name)}
        if special:
            lines.append("elements: {" + ", ".join(f"{k}: {v}" for k, v in special.items()) + "}")
        if self.bonds:
            lines.append("bonds:")
            for a, b in self.bonds:
                lines.append(f"  - [{a}, {b}]")
        return "\n".join(lines) + "\n"


def _p_token(m: BeadMembership) -> str:
    if not m.reconstructed:
        # the atom is reconstructed from another of its beads only
        return "-"
    if m.level <= 1:
        return f"P{m.level}{m.own_id}"
    return f"P{m.level}{m.anchor_id}{m.own_id}"


def _fraction(w: float) -> str:
    f = Fraction(w).limit_denominator(24)
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


# ---------------------------------------------------------------------- parsing
class _UniqueKeys:
    """``yaml.safe_load`` that refuses a repeated key (safe_load silently keeps the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


class _UniqueKeyLoader(_UniqueKeys, yaml.SafeLoader):
    pass


class _FastUniqueKeyLoader(_UniqueKeys, getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """The same with libyaml's parser: 7x faster (the 70 mapping files of a model were 2 s of every
    process's start), but its composer recurses in C, and a file nested 100,000 deep crashes it."""


def _yaml_loader(text: str):
    """libyaml for text nested as a mapping file is (a few levels), the Python parser (which
    raises RecursionError) for anything deeper."""
    brackets = re.sub(r"[^\[\]{}]", "", text)
    depth = max(accumulate(1 if c in "[{" else -1 for c in brackets), default=0)
    indent = max((len(line) - len(line.lstrip(" ")) for line in text.splitlines()), default=0)
    shallow = depth <= _FAST_YAML_DEPTH and indent <= 2 * _FAST_YAML_DEPTH
    return _FastUniqueKeyLoader if shallow else _UniqueKeyLoader


_FAST_YAML_DEPTH = 64


def load_molecule_mapping(path: str | Path, require_hierarchy: bool = True) -> MoleculeMapping:
    """Read and validate one mapping YAML file.

    ``require_hierarchy=False`` accepts a file that only lists atoms per bead (the
    input of ``herobm mapping complete``).
    """
    path = Path(path)
    try:  # a SafeLoader: YAML tags never construct Python objects or run code
        text = path.read_text(encoding="utf-8")
        data = yaml.load(text, Loader=_yaml_loader(text))
    except OSError as exc:
        raise MappingError(f"{path}: cannot read mapping file ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise MappingError(f"{path}: not UTF-8 text (byte {exc.start}); a mapping file is YAML text") from None
    except RecursionError:
        raise MappingError(f"{path}: is not valid YAML for a mapping: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = " ".join(str(getattr(exc, "problem", None) or exc).split())  # one line
        raise MappingError(f"{path}:{where} is not valid YAML: {problem}") from None
    return parse_molecule_mapping(data, source=str(path), require_hierarchy=require_hierarchy)


def _describe(value) -> str:
    """A short description of a YAML value for a message (never the repr of a container,
    which a file with aliases can make exponentially long)."""
    if isinstance(value, (dict, list, tuple)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    return repr(value)[:40]


def _text(value, what: str, where: str) -> str:
    """A name or token read from YAML: a string or a number, never a list, mapping or null."""
    if isinstance(value, bool):  # YAML 1.1 reads unquoted yes/no/on/off as booleans
        raise MappingError(f"{where}: {what} {value!r} is a YAML boolean; quote the name")
    if not isinstance(value, (str, int, float)):
        raise MappingError(f"{where}: {what} must be a name, not {_describe(value)}")
    return str(value).strip()


def _text_list(value, what: str, where: str) -> list[str]:
    if not isinstance(value, list):
        raise MappingError(f"{where}: '{what}:' must be a list like [A, B], not {_describe(value)}")
    return [_text(v, f"an entry of '{what}:'", where) for v in value]


def parse_molecule_mapping(data, source: str = "<memory>", require_hierarchy: bool = True) -> MoleculeMapping:
    if not isinstance(data, dict) or "molecule" not in data or "atoms" not in data:
        raise MappingError(f"{source}: a mapping file needs the keys 'molecule:' and 'atoms:'")
    name = _text(data["molecule"], "'molecule:'", source)
    if not name:
        raise MappingError(f"{source}: 'molecule:' is empty; give the residue name")
    where = f"{source}: molecule {name}"
    atoms_in = data["atoms"]
    if not isinstance(atoms_in, dict) or not atoms_in:
        raise MappingError(f"{where}: 'atoms:' must map atom names to bead specifications")
    unknown_keys = set(data) - {"molecule", "atoms", "beads", "cg_name", "residue_names", "weighting", "bonds", "elements"}
    if unknown_keys:
        raise MappingError(f"{where}: unknown key(s) {sorted(unknown_keys, key=str)}; see docs/mapping-format.md")
    elements_in = data.get("elements") or {}
    if not isinstance(elements_in, dict):
        raise MappingError(f"{where}: 'elements:' must map atom names to element symbols, not {_describe(elements_in)}")
    elements = {_text(k, "an atom name in 'elements:'", where): _text(v, "an element in 'elements:'", where)
                for k, v in elements_in.items()}

    atoms: list[MappedAtom] = []
    bead_order: list[str] = []
    seen_names: set[str] = set()
    for key, spec in atoms_in.items():
        names = [n.strip() for n in _text(key, "an atom name", where).split(",") if n.strip()]
        if not names:
            raise MappingError(f"{where}: empty atom name")
        atom_where = f"{where}, atom {names[0]}"
        if names[0] in seen_names:
            raise MappingError(f"{atom_where}: duplicate atom name")
        seen_names.add(names[0])
        if len(set(names)) != len(names):
            raise MappingError(f"{atom_where}: a name is repeated among its aliases {names}")
        atom = _parse_atom(names, spec, atom_where, elements.get(names[0]))
        atoms.append(atom)
        for m in atom.memberships:
            if m.bead not in bead_order:
                bead_order.append(m.bead)

    beads = bead_order
    if data.get("beads") is not None:
        beads = _text_list(data["beads"], "beads", where)
        for b in bead_order:
            if b not in beads:
                atom = next(a for a in atoms if any(m.bead == b for m in a.memberships))
                raise MappingError(f"{where}, atom {atom.name}: unknown bead {b!r} (not in 'beads: {beads}')")
        for b in beads:
            if b not in bead_order:
                raise MappingError(f"{where}: bead {b!r} has no atoms")

    bonds = []
    bonds_in = data.get("bonds") or []
    if not isinstance(bonds_in, list):
        raise MappingError(f"{where}: 'bonds:' must be a list of atom pairs, not {_describe(bonds_in)}")
    for entry in bonds_in:
        pair = entry if isinstance(entry, list) else _text(entry, "a bond", where).split()
        pair = [_text(p, "a bond atom", where) for p in pair]
        if len(pair) != 2 or any(p not in seen_names for p in pair):
            raise MappingError(f"{where}: bond {' '.join(pair)!r} must name two atoms of the molecule")
        bonds.append((pair[0], pair[1]))

    weighting = _text(data.get("weighting", "mass"), "'weighting:'", where)
    if weighting not in ("mass", "geometric"):
        raise MappingError(f"{where}: weighting must be 'mass' or 'geometric', not {weighting!r}")
    if weighting == "mass":  # a weighted heavy atom needs a mass (a bare MappingError later names no atom)
        for atom in atoms:
            if not atom.is_hydrogen and any(m.weight > 0 for m in atom.memberships) and not has_mass(atom.element):
                raise MappingError(f"{where}, atom {atom.name}: no mass known for element {atom.element!r}; "
                                   "give its element under 'elements:' or use 'weighting: geometric'")
    mapping = MoleculeMapping(
        name=name,
        atoms=atoms,
        beads=beads,
        cg_name=_text(data["cg_name"], "'cg_name:'", where) if data.get("cg_name") else None,
        residue_names=tuple(_text_list(data.get("residue_names") or [], "residue_names", where)),
        weighting=weighting,
        bonds=bonds,
        source=source,
    )
    validate(mapping, require_hierarchy)
    return mapping


def _parse_atom(names: list[str], spec, where: str, element: str | None) -> MappedAtom:
    tokens = [] if spec is None else _text(spec, "the bead specification", where).split()
    if not tokens:
        raise MappingError(f"{where}: no bead given")
    beads = [b.strip() for b in tokens[0].split(",")]
    if any(not b for b in beads):
        raise MappingError(f"{where}: empty bead name in {tokens[0]!r}")
    if len(set(beads)) != len(beads):
        raise MappingError(f"{where}: bead listed twice in {tokens[0]!r}; give the share as a weight instead")
    n = len(beads)
    p_tokens: list[str | None] | None = None
    weights: list[float] | None = None
    no_weight = is_cm = optional = False
    for tok in tokens[1:]:
        if tok == "!":
            no_weight = True
        elif tok == "CM":
            is_cm = True
        elif tok == "?":
            optional = True
        elif tok.startswith("P") or tok.startswith("-"):
            parts = tok.split(",")
            if len(parts) != n:
                raise MappingError(f"{where}: {len(parts)} hierarchy token(s) {tok!r} for {n} bead(s) {beads}; give one per bead ('-' for none)")
            p_tokens = [None if p == "-" else p for p in parts]
        elif all(_WEIGHT.match(p) for p in tok.split(",")):
            parts = tok.split(",")
            if len(parts) != n:
                raise MappingError(f"{where}: {len(parts)} weight(s) {tok!r} for {n} bead(s) {beads}")
            try:
                weights = [float(Fraction(p)) for p in parts]
            except (ValueError, ZeroDivisionError, OverflowError):
                raise MappingError(f"{where}: bad weight in {tok!r} (expected fractions like 1/3,2/3)") from None
        else:
            raise MappingError(f"{where}: cannot understand token {tok!r} (expected P<level><anchor><id>, weights like 1/2,1/2, '!', 'CM' or '?')")
    if weights is None:
        weights = [1.0 / n] * n
    elif abs(sum(weights) - 1.0) > 1e-6:
        raise MappingError(f"{where}: weights {','.join(map(_fraction, weights))} sum to {sum(weights):.4g}, not 1")
    if no_weight:
        weights = [0.0] * n
    memberships = []
    for k, bead in enumerate(beads):
        level = anchor = own = None
        if p_tokens is not None and p_tokens[k] is not None:
            match = _P_TOKEN.match(p_tokens[k])
            if not match:
                raise MappingError(f"{where}: bad hierarchy token {p_tokens[k]!r} (expected P1A, P2AB, ...)")
            level = int(match.group(1))
            if level <= 1:
                if match.group(3):
                    raise MappingError(f"{where}: level-{level} token {p_tokens[k]!r} is anchored on the bead and takes one id (e.g. P{level}A)")
                own = match.group(2)
            else:
                if not match.group(3):
                    raise MappingError(f"{where}: level-{level} token {p_tokens[k]!r} needs an anchor id and an own id (e.g. P{level}AB)")
                anchor, own = match.group(2), match.group(3)
        memberships.append(BeadMembership(bead, weights[k], level, anchor, own))
    element = element or element_from_name(names[0])
    if not _known_element(element):
        raise MappingError(f"{where}: {element!r} is not an element symbol; give the atom's element under 'elements:'")
    return MappedAtom(
        name=names[0],
        aliases=tuple(names[1:]),
        element=element,
        memberships=tuple(memberships),
        is_cm=is_cm,
        optional=optional,
    )


def validate(mapping: MoleculeMapping, require_hierarchy: bool = True) -> None:
    """Check hierarchy consistency; raise :class:`MappingError` naming the culprit."""
    where = f"{mapping.source}: molecule {mapping.name}"
    ids: dict[tuple[str, int, str], str] = {}
    cm_of: dict[str, str] = {}
    for atom in mapping.atoms:
        if atom.is_cm:
            for m in atom.memberships:
                if m.bead in cm_of:
                    raise MappingError(f"{where}, atom {atom.name}: bead {m.bead} already sits on atom {cm_of[m.bead]} (one CM per bead)")
                cm_of[m.bead] = atom.name
        for m in atom.memberships:
            if not m.reconstructed:
                continue
            level = max(m.level, 1)
            key = (m.bead, level, m.own_id)
            if key in ids:
                raise MappingError(f"{where}, atom {atom.name}: id {m.own_id} at level {level} of bead {m.bead} is already used by atom {ids[key]}")
            ids[key] = atom.name
    for atom in mapping.atoms:
        for m in atom.memberships:
            if m.reconstructed and m.level >= 2 and (m.bead, m.level - 1, m.anchor_id) not in ids:
                raise MappingError(
                    f"{where}, atom {atom.name}: anchor {m.anchor_id} is not defined at level {m.level - 1} of bead {m.bead}"
                )
    for bead in mapping.beads:
        members = [(a, m) for a in mapping.atoms for m in a.memberships if m.bead == bead]
        if require_hierarchy and not any(m.reconstructed for _, m in members):
            raise MappingError(f"{where}: bead {bead} has no reconstructed atom (give at least one atom a P1 token)")
        if bead not in cm_of and not any(m.weight > 0 and not a.is_hydrogen for a, m in members):
            raise MappingError(f"{where}: bead {bead} has no heavy atom carrying weight; its position is undefined")
    # Anchors always point one level up, so the hierarchy is a forest; check anyway,
    # since slots() relies on it.
    for bead in mapping.beads:
        mapping.slots(bead)

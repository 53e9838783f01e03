"""Import martinize2/vermouth ``.map`` files (``herobm mapping import``).

A ``.map`` file lists, under ``[ atoms ]``, each atom with the beads it belongs to;
a bead named k times gets k shares of the atom, and ``!BEAD`` means membership with
no weight.  That is exactly how martinize2 weights its bead centres, so the imported
mapping reproduces martinize2's beads.  The hierarchy is then assigned automatically.
"""

from __future__ import annotations

import collections
from fractions import Fraction
from pathlib import Path

from ..errors import MappingError
from .hierarchy import complete_hierarchy
from .molecule import BeadMembership, MappedAtom, MoleculeMapping, element_from_name, validate


def read_vermouth_map(path: str | Path) -> MoleculeMapping:
    """Parse a vermouth ``.map`` file into a mapping without hierarchy."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise MappingError(f"{path}: cannot read ({exc.strerror})") from None
    section, name, beads, rows = None, None, None, []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split(";")[0].strip()
        if not line:
            continue
        if line.startswith("["):
            section = line.strip("[] ").lower()
            continue
        if section == "molecule" and name is None:
            name = line.split()[0]
        elif section == "martini" and beads is None:
            beads = line.split()
        elif section == "atoms":
            fields = line.split()
            if len(fields) < 3:
                raise MappingError(f"{path}:{lineno}: an [ atoms ] line needs 'index name bead...', got {line!r}")
            rows.append((fields[1], fields[2:], lineno))
    if name is None or not rows:
        raise MappingError(f"{path}: not a vermouth mapping (needs [ molecule ] and [ atoms ] sections)")
    atoms = []
    for atom_name, targets, lineno in rows:
        weighted = collections.Counter(t for t in targets if not t.startswith("!"))
        null = [t[1:] for t in targets if t.startswith("!")]
        order = list(dict.fromkeys(t.lstrip("!") for t in targets))
        total = sum(weighted.values())
        memberships = []
        for bead in order:
            share = Fraction(weighted.get(bead, 0), total) if total else Fraction(0)
            if bead in null and weighted.get(bead):
                raise MappingError(f"{path}:{lineno}: atom {atom_name} is mapped to {bead} with and without '!'")
            memberships.append(BeadMembership(bead, float(share)))
        atoms.append(MappedAtom(atom_name, (), element_from_name(atom_name), tuple(memberships)))
    if beads is None:
        beads = list(dict.fromkeys(m.bead for a in atoms for m in a.memberships))
    mapping = MoleculeMapping(name=name, atoms=atoms, beads=beads, source=str(path))
    validate(mapping, require_hierarchy=False)
    return mapping


def merge_naming(primary: MoleculeMapping, other: MoleculeMapping) -> MoleculeMapping:
    """Add ``other``'s atom names as aliases of ``primary``'s (e.g. CHARMM names to AMBER ones).

    Atoms are paired by order of appearance among atoms with the same element and the
    same bead memberships, so CHARMM's ``HB1, HB2`` become aliases of ``HB2, HB3`` and
    ILE ``CD`` of ``CD1``.  Atoms of ``other`` with no partner are ignored.
    """

    def key(atom: MappedAtom):
        return atom.element, tuple((m.bead, round(m.weight, 6)) for m in atom.memberships)

    groups = collections.defaultdict(list)
    for atom in other.atoms:
        groups[key(atom)].append(atom)
    atoms = []
    for atom in primary.atoms:
        partners = groups.get(key(atom))
        aliases = list(atom.aliases)
        if partners:
            partner = partners.pop(0)
            aliases += [n for n in partner.names if n != atom.name and n not in aliases]
        atoms.append(MappedAtom(atom.name, tuple(aliases), atom.element, atom.memberships, atom.is_cm, atom.optional))
    return MoleculeMapping(primary.name, atoms, primary.beads, primary.cg_name, primary.residue_names,
                           primary.weighting, primary.bonds, primary.source)


def import_vermouth_map(path: str | Path, bonds: list[tuple[str, str]] | None = None,
                        alias_maps: list[str | Path] = ()) -> MoleculeMapping:
    """Read a ``.map`` file, merge alias names from ``alias_maps``, and assign the hierarchy."""
    mapping = read_vermouth_map(path)
    for other in alias_maps:
        mapping = merge_naming(mapping, read_vermouth_map(other))
    return complete_hierarchy(mapping, bonds)

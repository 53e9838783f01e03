"""Automatic hierarchy assignment (``herobm mapping complete``).

Given only which atoms form each bead and the molecule's bond graph, give every heavy
atom of every bead a level, an anchor and an id: per bead, the ``CM`` atom if there is one, else the most central atom of
the bead's bonded sub-graph (smallest summed graph distance to the others) sits at
level 1 on the bead; the rest follow breadth-first along bonds inside the bead, each
anchored on its parent.  Central roots keep the hierarchy shallow, so errors do not
pile up along long chains.  Atoms of a bead that are not bonded to the rest of it
(a sub-graph in pieces) start their own tree at level 1.
"""

from __future__ import annotations

import string
from collections import deque
from dataclasses import replace
from pathlib import Path

from ..chemistry import standard_residue
from ..errors import MappingError
from .molecule import BeadMembership, MappedAtom, MoleculeMapping, validate

_IDS = string.ascii_uppercase + string.ascii_lowercase


def template_bonds(resname: str) -> list[tuple[str, str]] | None:
    """Intra-residue bonds of a standard residue from OpenMM's templates, or None."""
    import openmm.app as app

    if not app.Topology._standardBonds:
        app.Topology.loadBondDefinitions(str(Path(app.__file__).parent / "data" / "residues.xml"))
    # OpenMM's templates have the standard names; a variant has its standard's heavy-atom graph
    bonds = app.Topology._standardBonds.get(standard_residue(resname))
    if bonds is None:
        return None
    return [(a, b) for a, b in bonds if not a.startswith(("-", "+")) and not b.startswith(("-", "+"))]


def bonds_from_structure(residue_atoms: list[tuple[str, str, "object"]], tolerance: float = 0.045) -> list[tuple[str, str]]:
    """Bonds by distance (nm) from ``(name, element, xyz)`` tuples: d < r_i + r_j + tolerance."""
    import numpy as np

    radii = {"H": 0.031, "C": 0.076, "N": 0.071, "O": 0.066, "S": 0.105, "P": 0.107,
             "F": 0.057, "Cl": 0.102, "Br": 0.120, "I": 0.139}
    names = [a[0] for a in residue_atoms]
    xyz = np.array([a[2] for a in residue_atoms], dtype=float)
    r = np.array([radii.get(a[1], 0.08) for a in residue_atoms])
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    i, j = np.nonzero(np.triu(d < r[:, None] + r[None] + tolerance, k=1))
    return [(names[a], names[b]) for a, b in zip(i, j)]


def check_structure_residue(mapping: MoleculeMapping, atoms: list[tuple[str, str]], where: str) -> None:
    """Refuse a structure residue (``(name, element)`` of its atoms) whose heavy atoms are not the
    mapping's: a bond graph taken from it would silently lack bonds, and a mapping atom without
    bonds starts a tree of its own.  Hydrogens are not compared (structures often have none)."""
    known = {n for a in mapping.atoms for n in a.names}
    for name, element in atoms:
        if element != "H" and name not in known:
            raise MappingError(f"{where}: atom {name} is not in mapping {mapping.name} ({mapping.source}); "
                               "add it to the mapping ('?' if only some residues have it) or rename it")
    present = {name for name, _ in atoms}
    for atom in mapping.atoms:
        if not atom.is_hydrogen and not atom.optional and not present.intersection(atom.names):
            raise MappingError(f"{where}: has no atom {atom.name} of mapping {mapping.name} ({mapping.source}); "
                               "give a structure with the whole molecule or fix the atom name")


def complete_hierarchy(mapping: MoleculeMapping, bonds: list[tuple[str, str]] | None = None) -> MoleculeMapping:
    """A copy of ``mapping`` whose heavy atoms all carry hierarchy tokens.

    ``bonds`` (atom-name pairs) default to the mapping's own ``bonds:`` or, for standard
    residues, OpenMM's templates.  Existing tokens are replaced.  Optional atoms (``?``)
    and hydrogens are left without tokens.
    """
    where = f"{mapping.source}: molecule {mapping.name}"
    if bonds is None:
        bonds = mapping.bonds or template_bonds(mapping.name)
    if not bonds:
        raise MappingError(f"{where}: no bond graph known; list bonds under 'bonds:' or pass a structure of the molecule")
    canonical = {}
    for atom in mapping.atoms:
        for n in atom.names:
            canonical.setdefault(n, atom.name)
    neighbours: dict[str, set[str]] = {a.name: set() for a in mapping.atoms}
    for a, b in bonds:
        a, b = canonical.get(a), canonical.get(b)
        if a is not None and b is not None and a != b:
            neighbours[a].add(b)
            neighbours[b].add(a)

    reconstruct = [a for a in mapping.atoms if not a.is_hydrogen and not a.optional]
    tokens: dict[tuple[str, str], tuple[int, str | None, str]] = {}  # (atom, bead) -> level, anchor, id
    for bead in mapping.beads:
        members = [a.name for a in reconstruct if any(m.bead == bead for m in a.memberships)]
        member_set = set(members)
        remaining = list(members)
        used_ids: dict[int, int] = {}
        cm = [a.name for a in mapping.atoms if a.is_cm and any(m.bead == bead for m in a.memberships)]
        while remaining:
            # a bead that sits on an atom (CM) grows its tree from that atom
            root = cm.pop() if cm and cm[-1] in remaining else _most_central(remaining, neighbours, member_set)
            seen = {root}
            tokens[(root, bead)] = (1, None, _next_id(used_ids, 1, where, bead))
            queue = deque([root])
            while queue:
                parent = queue.popleft()
                level, _, parent_id = tokens[(parent, bead)]
                for child in [m for m in members if m in neighbours[parent] and m not in seen]:
                    seen.add(child)
                    tokens[(child, bead)] = (level + 1, parent_id, _next_id(used_ids, level + 1, where, bead))
                    queue.append(child)
            remaining = [m for m in remaining if m not in seen]

    atoms = []
    for atom in mapping.atoms:
        memberships = []
        for m in atom.memberships:
            tok = tokens.get((atom.name, m.bead))
            if tok is None:
                memberships.append(replace(m, level=None, anchor_id=None, own_id=None))
            else:
                memberships.append(replace(m, level=tok[0], anchor_id=tok[1], own_id=tok[2]))
        atoms.append(MappedAtom(atom.name, atom.aliases, atom.element, tuple(memberships), atom.is_cm, atom.optional))
    done = MoleculeMapping(mapping.name, atoms, list(mapping.beads), mapping.cg_name, mapping.residue_names,
                           mapping.weighting, list(mapping.bonds), mapping.source)
    validate(done)
    return done


def _most_central(candidates: list[str], neighbours: dict[str, set[str]], allowed: set[str]) -> str:
    """The candidate with the smallest summed BFS distance to the candidates it reaches."""
    best, best_key = candidates[0], None
    for start in candidates:
        dist = {start: 0}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for nb in neighbours[node]:
                if nb in allowed and nb not in dist:
                    dist[nb] = dist[node] + 1
                    queue.append(nb)
        # more atoms reached first, then smaller summed distance, then file order
        key = (-len(dist), sum(dist.values()))
        if best_key is None or key < best_key:
            best, best_key = start, key
    return best


def _next_id(used: dict[int, int], level: int, where: str, bead: str) -> str:
    k = used.get(level, 0)
    if k >= len(_IDS):
        raise MappingError(f"{where}: bead {bead} has more than {len(_IDS)} atoms at level {level}")
    used[level] = k + 1
    return _IDS[k]


def strip_hierarchy(mapping: MoleculeMapping) -> MoleculeMapping:
    """A copy without any hierarchy tokens (what a user writes before ``complete``)."""
    atoms = [MappedAtom(a.name, a.aliases, a.element,
                        tuple(BeadMembership(m.bead, m.weight) for m in a.memberships), a.is_cm, a.optional)
             for a in mapping.atoms]
    return MoleculeMapping(mapping.name, atoms, list(mapping.beads), mapping.cg_name, mapping.residue_names,
                           mapping.weighting, list(mapping.bonds), mapping.source)

"""Terminal oxygens and hydrogens: Modeller.addHydrogens at a pH, seeded, for any residue the force field knows."""

from __future__ import annotations

import contextlib
import random
from pathlib import Path

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

from ..chemistry import PROTEIN_RESIDUES
from .system import SEED, named_templates


def add_terminal_oxygens(topology: app.Topology, positions_nm: np.ndarray) -> tuple[app.Topology, np.ndarray]:
    """Add the OXT of every chain's last amino acid (a CG bead cannot say where a chain ends).

    OXT is O mirrored through the CA->C axis: the two carboxylate oxygens are symmetric.
    """
    new = app.Topology()
    new.setPeriodicBoxVectors(topology.getPeriodicBoxVectors())
    xyz, mapping = [], {}
    for chain in topology.chains():
        new_chain = new.addChain(chain.id)
        residues = list(chain.residues())
        for k, residue in enumerate(residues):
            new_res = new.addResidue(residue.name, new_chain, residue.id, residue.insertionCode)
            names = {}
            for atom in residue.atoms():
                mapping[atom] = new.addAtom(atom.name, atom.element, new_res)
                names[atom.name] = atom.index
                xyz.append(positions_nm[atom.index])
            last = k == len(residues) - 1
            if last and "OXT" not in names and all(n in names for n in ("CA", "C", "O")):
                c, ca, o = (positions_nm[names[n]] for n in ("C", "CA", "O"))
                axis = (c - ca) / np.linalg.norm(c - ca)
                v = o - c
                oxt = new.addAtom("OXT", app.element.oxygen, new_res)
                xyz.append(c + 2 * np.dot(v, axis) * axis - v)
                c_atom = next(a for a in residue.atoms() if a.name == "C")
                mapping[("OXT", c_atom)] = oxt
    for a, b in topology.bonds():
        new.addBond(mapping[a], mapping[b])
    for key, oxt in mapping.items():
        if isinstance(key, tuple):
            new.addBond(mapping[key[1]], oxt)
    return new, np.array(xyz)


@contextlib.contextmanager
def seeded_python_random(seed: int = SEED):
    """Modeller places new hydrogens and ions with Python's ``random``: seed it for the call (and
    give the caller's random state back after), so the same input gives the same atoms.  A context
    manager, or a decorator (``add_hydrogens``)."""
    saved = random.getstate()
    random.seed(seed)
    try:
        yield
    finally:
        random.setstate(saved)


@seeded_python_random()
def add_hydrogens(modeller: app.Modeller, forcefield: app.ForceField, ph: float, variants: list,
                  platform: mm.Platform | None = None) -> list:
    """Terminal OXT and hydrogens at ``ph`` (protonation variants given in the input are kept);
    returns the variant of every residue (what Modeller chose: pass it back for the same atoms)."""
    positions = np.asarray(modeller.positions.value_in_unit(unit.nanometer))
    topology, positions = add_terminal_oxygens(modeller.topology, positions)
    modeller.topology, modeller.positions = topology, unit.Quantity(positions, unit.nanometer)
    variants = terminal_variants(topology, variants)
    load_hydrogen_definitions(forcefield, topology)
    if any(r.name not in PROTEIN_RESIDUES for r in modeller.topology.residues()):
        # lipids/ligands: their heavy atoms may overlap (raw model output), which makes the
        # hydrogen relaxation of addHydrogens (heavy atoms fixed, no cutoff) fail after a long
        # run; place hydrogens by geometry, the staged minimisation relaxes them
        used = modeller.addHydrogens(None, pH=ph, variants=variants)
        separate_overlapping_hydrogens(modeller)
        return used
    # the platform matters: addHydrogens minimises the new hydrogens (Reference is slow)
    try:
        used = modeller.addHydrogens(forcefield, pH=ph, variants=variants, platform=platform,
                                     residueTemplates=named_templates(forcefield, modeller.topology))
    except mm.OpenMMException:
        # the relaxation of the new hydrogens (heavy atoms fixed) failed (it blows up to NaN on
        # overlapping heavy atoms): place them by geometry only; the staged minimisation follows
        used = modeller.addHydrogens(None, pH=ph, variants=variants)
    separate_overlapping_hydrogens(modeller)
    return used


def terminal_variants(topology: app.Topology, variants: list) -> list:
    """``variants`` with the neutral ASH/GLH/LYN of chain ends left to the pH (amber14 has no
    terminal templates for them)."""
    variants = list(variants)
    for chain in topology.chains():
        residues = list(chain.residues())
        for end in {residues[0].index, residues[-1].index}:
            if variants[end] in ("ASH", "GLH", "LYN"):
                variants[end] = None
    return variants


def templates_free_residues(forcefield: app.ForceField, topology: app.Topology, positions_nm: np.ndarray,
                            variants: list, residues: list[int], ph: float) -> bool:
    """Whether ``forcefield`` parameterises the ``residues`` of ``topology`` as free amino acids
    (both termini on one residue: CHARMM36 patches them, amber14 has no such template).

    Checked up front on one residue of each name, alone, with its OXT and hydrogens at ``ph``,
    so that a force field that cannot is known before the whole system is built.
    """
    modeller = app.Modeller(topology, unit.Quantity(positions_nm, unit.nanometer))
    every = list(topology.residues())
    first = {}
    for index in residues:
        first.setdefault((every[index].name, variants[index]), index)
    keep = set(first.values())
    modeller.delete([r for r in topology.residues() if r.index not in keep])
    kept = sorted(keep)
    xyz = np.asarray(modeller.positions.value_in_unit(unit.nanometer))
    probe, xyz = add_terminal_oxygens(modeller.topology, xyz)
    modeller = app.Modeller(probe, unit.Quantity(xyz, unit.nanometer))
    modeller.addHydrogens(None, pH=ph, variants=terminal_variants(probe, [variants[i] for i in kept]))
    try:
        forcefield.createSystem(modeller.topology)
    except ValueError:  # OpenMM's "no template for this residue"
        return False
    return True


def separate_overlapping_hydrogens(modeller: app.Modeller, distance_nm: float = 0.05, hh_distance_nm: float = 0.12,
                                   seed: int = 0) -> int:
    """Move hydrogens that sit on another atom (< ``distance_nm``), or on another hydrogen
    (< ``hh_distance_nm``; geminal ones are 0.175 nm apart), by 0.03 nm in a random (seeded) direction.

    Geometric placement can put the two hydrogens of a CH2 whose neighbours are collinear, or
    of a methyl built on a collapsed group, (nearly) on one spot; there the H-C-H angle force
    has (almost) no gradient, so minimisation does not separate them and dynamics blows up.
    Returns how many were moved.
    """
    from scipy.spatial import cKDTree

    xyz = np.asarray(modeller.positions.value_in_unit(unit.nanometer), dtype=np.float64)
    pairs = cKDTree(xyz).query_pairs(max(distance_nm, hh_distance_nm), output_type="ndarray")
    if not len(pairs):
        return 0
    atoms = list(modeller.topology.atoms())
    is_h = np.array([a.element is app.element.hydrogen for a in atoms])
    length = np.linalg.norm(xyz[pairs[:, 0]] - xyz[pairs[:, 1]], axis=1)
    bad = pairs[(length < distance_nm) | (is_h[pairs].all(1) & (length < hh_distance_nm))]
    hydrogens = {int(i) for i in bad.ravel() if is_h[i]}
    rng = np.random.default_rng(seed)
    for i in sorted(hydrogens):
        step = rng.normal(size=3)
        xyz[i] += 0.03 * step / np.linalg.norm(step)
    modeller.positions = unit.Quantity(xyz, unit.nanometer)
    return len(hydrogens)


def load_hydrogen_definitions(forcefield: app.ForceField, topology: app.Topology) -> list[str]:
    """Teach ``Modeller.addHydrogens`` the residues it has no definitions for (lipids, ligands).

    Each hydrogen's parent is the heavy atom it is bonded to in the force field's template
    of that name; returns the residue names that got definitions.
    """
    import tempfile
    from xml.sax.saxutils import quoteattr

    app.Modeller._loadStandardHydrogenDefinitions()  # else they would load later, on top of ours
    known = app.Modeller._residueHydrogens
    lines, added = ["<Residues>"], []
    for name in sorted({r.name for r in topology.residues()} - set(known)):
        template = forcefield._templates.get(name)
        if template is None:
            continue
        lines.append(f" <Residue name={quoteattr(name)}>")
        for i, j in template.bonds:
            for h, parent in ((i, j), (j, i)):
                atom, heavy = template.atoms[h], template.atoms[parent]
                if atom.element is app.element.hydrogen and heavy.element is not app.element.hydrogen:
                    lines.append(f"  <H name={quoteattr(atom.name)} parent={quoteattr(heavy.name)}/>")
        lines.append(" </Residue>")
        added.append(name)
    if added:
        with tempfile.NamedTemporaryFile("w", suffix=".xml", delete=False) as f:
            f.write("\n".join(lines + ["</Residues>"]))
        try:
            app.Modeller.loadHydrogenDefinitions(f.name)
        finally:
            Path(f.name).unlink()
    return added

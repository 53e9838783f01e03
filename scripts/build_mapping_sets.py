"""Regenerate the shipped protein mapping sets (mappings/martini3, mappings/ca).

    python scripts/build_mapping_sets.py [VERMOUTH_MAP_DIR]

The Martini 3 set is imported from martinize2/vermouth's martini3001 ``.map`` files
(default: ../shared/data/reference_mappings/vermouth_martini3001), renamed to PDB atom
names with the CHARMM/AMBER/old-PDB names as aliases (OpenMM's pdbNames.xml), and
given an automatic hierarchy.  Caps (ACE, NME) are defined here: martini3001 has no
map for them.  The CA set puts one bead per residue on the alpha carbon.
"""

from __future__ import annotations

import sys
from pathlib import Path

import openmm.app as app

from openmm_herobm.mapping import complete_hierarchy, read_vermouth_map
from openmm_herobm.mapping.molecule import BeadMembership, MappedAtom, MoleculeMapping, parse_molecule_mapping

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MAPS = ROOT.parent / "shared" / "data" / "reference_mappings" / "vermouth_martini3001"

# residue name -> .map file stem; variants without a map of their own reuse a parent's
# heavy-atom mapping (they differ in hydrogens only).
SOURCES = {
    "ALA": "ala.charmm36", "ARG": "arg.charmm36", "ASN": "asn.charmm36", "ASP": "asp.charmm36",
    "CYS": "cys.charmm36", "GLN": "gln.charmm36", "GLU": "glu.charmm36", "GLY": "gly.charmm36",
    "HIS": "his.charmm36", "ILE": "ile.charmm36", "LEU": "leu.charmm36", "LYS": "lys.charmm36",
    "MET": "met.charmm36", "PHE": "phe.charmm36", "PRO": "pro.charmm36", "SER": "ser.charmm36",
    "THR": "thr.charmm36", "TRP": "trp.charmm36", "TYR": "tyr.charmm36", "VAL": "val.charmm36",
    "HID": "hid.amber", "HIE": "hie.amber", "HIP": "hip.amber",
    "HSD": "hsd.charmm36", "HSE": "hse.charmm36", "HSP": "hsp.charmm36",
    "ASH": "ash.amber", "GLH": "glh.amber", "LYN": "lyn.amber",
    "CYX": "cys.charmm36", "CYM": "cys.charmm36",
}

CAPS = {
    "ACE": {"molecule": "ACE", "atoms": {"CH3": "BB", "C": "BB", "O": "BB", "H1": "BB", "H2": "BB", "H3": "BB"}},
    "NME": {"molecule": "NME", "atoms": {"N": "BB", "C": "BB", "H": "BB", "H1": "BB", "H2": "BB", "H3": "BB"},
            "bonds": [["N", "C"]]},
}


def pdb_alias_table(resname: str) -> dict[str, list[str]]:
    """standard PDB name -> alternative names, from OpenMM's pdbNames.xml."""
    app.PDBFile._loadNameReplacementTables()
    table: dict[str, list[str]] = {}
    for key in ("*", "Protein", {"HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS",
                                  "HSP": "HIS", "CYX": "CYS", "CYM": "CYS", "ASH": "ASP", "GLH": "GLU",
                                  "LYN": "LYS"}.get(resname, resname)):
        for alt, std in app.PDBFile._atomNameReplacements.get(key, {}).items():
            if alt != std and alt not in table.get(std, []):
                table.setdefault(std, []).append(alt)
    return table


def to_pdb_names(mapping: MoleculeMapping, resname: str) -> MoleculeMapping:
    aliases = pdb_alias_table(resname)
    alt_to_std = {alt: std for std, alts in aliases.items() for alt in alts}
    names_in_map = {a.name for a in mapping.atoms}
    atoms = []
    for atom in mapping.atoms:
        std = atom.name
        if atom.name in alt_to_std and alt_to_std[atom.name] not in names_in_map:
            std = alt_to_std[atom.name]
        extra = [n for n in [atom.name] + aliases.get(std, []) if n != std]
        atoms.append(MappedAtom(std, tuple(dict.fromkeys(extra)), atom.element, atom.memberships))
    bb = [a for a in atoms if a.name == "O"][0].memberships[0].bead
    if not any(a.name == "OXT" for a in atoms):
        # C-terminal oxygen: weighs in the BB bead when present (as martinize2's C-ter
        # modification does); not reconstructed since a CG bead cannot tell a terminus.
        atoms.append(MappedAtom("OXT", tuple(aliases.get("OXT", [])), "O", (BeadMembership(bb, 1.0),), optional=True))
    # martinize2 writes BB, SC1, SC2, ... (the .map files do not always list them in order)
    beads = sorted(mapping.beads, key=lambda b: (b != "BB", len(b), b))
    return MoleculeMapping(resname, atoms, beads, source=mapping.source)


def build_martini3(map_dir: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for resname, stem in SOURCES.items():
        mapping = to_pdb_names(read_vermouth_map(map_dir / f"{stem}.map"), resname)
        mapping = complete_hierarchy(mapping)
        write(mapping, out / f"{resname}.yaml", f"martinize2/vermouth martini3001 {stem}.map")
    for resname, spec in CAPS.items():
        mapping = complete_hierarchy(parse_molecule_mapping(spec, resname, require_hierarchy=False),
                                     [tuple(b) for b in spec.get("bonds", [])] or None)
        write(mapping, out / f"{resname}.yaml", "openmm-herobm (martini3001 has no cap mapping): one bead per cap")


def build_ca(martini3: Path, out: Path) -> None:
    """One bead per residue, sitting on CA, holding every atom of the residue."""
    from openmm_herobm.mapping import load_molecule_mapping

    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(martini3.glob("*.yaml")):
        m3 = load_molecule_mapping(f)
        if not any(a.name == "CA" for a in m3.atoms):
            continue  # caps have no CA
        atoms = [MappedAtom(a.name, a.aliases, a.element, (BeadMembership("BB", 1.0),), is_cm=(a.name == "CA"),
                            optional=a.optional) for a in m3.atoms]
        mapping = complete_hierarchy(MoleculeMapping(m3.name, atoms, ["BB"], source=str(f)))
        write(mapping, out / f.name, "openmm-herobm CA-only mapping (bead on CA)")


def write(mapping: MoleculeMapping, path: Path, origin: str) -> None:
    text = f"# {mapping.name}: generated by scripts/build_mapping_sets.py from {origin}\n" + mapping.to_yaml()
    parse_molecule_mapping(__import__("yaml").safe_load(text), str(path))  # round-trip check
    path.write_text(text)


if __name__ == "__main__":
    maps = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MAPS
    build_martini3(maps, ROOT / "mappings" / "martini3")
    build_ca(ROOT / "mappings" / "martini3", ROOT / "mappings" / "ca")
    print("wrote", ROOT / "mappings" / "martini3", "and", ROOT / "mappings" / "ca")

#!/usr/bin/env python
"""Splice the CHARMM36 templates of glycerophospholipids that charmm36.xml lacks from ones it has.

CHARMM36 builds its lipids from fixed pieces: a head group, the glycerol with its two esters, and
acyl chains whose atoms carry the same types and charges in every lipid (the alpha carbon C22/C32
is a CTL2 of charge -0.22 in all of them).  A lipid with a known head and known chains is
therefore the head lipid with its chains exchanged at the C21-C22 (sn-2) and C31-C32 (sn-1)
bonds: this script does exactly that and writes the result between the ``spliced`` markers of
``openmm_herobm/pipeline/charmm36_lipids_extra.xml``.

    SPLICED = {new: (head lipid, sn-1 donor, sn-2 donor)}

Donors are charmm36.xml templates or the templates already in the extra file (DLIP, CHARMM-GUI's
DLIPE, for the linoleoyl chains; PAPC for the arachidonoyl and palmitoyl ones).  Every result is checked: an integer total charge, each atom's
valence as in its donor, and the chain atoms identical in type and charge to the donor's.

    python scripts/build_lipid_templates.py          # rewrites the spliced block
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EXTRA = ROOT / "openmm_herobm" / "pipeline" / "charmm36_lipids_extra.xml"
BEGIN, END = "<!-- spliced: begin", "<!-- spliced: end -->"

#: new template -> (the lipid whose head and glycerol it keeps, sn-1 chain donor, sn-2 chain donor)
SPLICED = {
    # dilinoleoyl (18:2/18:2): the Martini 3 lipidome's DLPC/DLPS/DLPG/DLPA (M3 v1: DIPC ...)
    "DIPC": ("POPC", "DLIP", "DLIP"), "DIPS": ("POPS", "DLIP", "DLIP"),
    "DIPG": ("POPG", "DLIP", "DLIP"), "DIPA": ("POPA", "DLIP", "DLIP"),
    # 1-palmitoyl-2-arachidonoyl (16:0/20:4): PAPC's chains (charmm36.xml's SAPx swap the CTL2/CTL3
    # charges of C218 and C220; PAPC, from CHARMM-GUI via mstool, has the standard ones)
    "PAPE": ("POPE", "PAPC", "PAPC"), "PAPG": ("POPG", "PAPC", "PAPC"), "PAPA": ("POPA", "PAPC", "PAPC"),
}
DESCRIPTION = {
    "DIPC": "1,2-dilinoleoyl-sn-glycero-3-phosphocholine (18:2/18:2; CHARMM-GUI's DLIPC)",
    "DIPS": "1,2-dilinoleoyl-sn-glycero-3-phospho-L-serine (18:2/18:2, charge -1; CHARMM-GUI's DLIPS)",
    "DIPG": "1,2-dilinoleoyl-sn-glycero-3-phospho-(1'-rac-glycerol) (18:2/18:2, charge -1)",
    "DIPA": "1,2-dilinoleoyl-sn-glycero-3-phosphate (18:2/18:2, charge -1)",
    "PAPE": "1-palmitoyl-2-arachidonoyl-sn-glycero-3-phosphoethanolamine (16:0/20:4)",
    "PAPG": "1-palmitoyl-2-arachidonoyl-sn-glycero-3-phospho-(1'-rac-glycerol) (16:0/20:4, charge -1)",
    "PAPA": "1-palmitoyl-2-arachidonoyl-sn-glycero-3-phosphate (16:0/20:4, charge -1)",
}
#: the bond at which each chain is cut: (ester carbon kept with the head, first chain carbon)
CUT = {"sn-1": ("C31", "C32"), "sn-2": ("C21", "C22")}


def templates() -> dict[str, ET.Element]:
    from openmm import app

    out = {}
    for path in (Path(os.path.dirname(app.__file__)) / "data" / "charmm36.xml", EXTRA):
        for residue in ET.parse(path).getroot().iter("Residue"):
            out.setdefault(residue.get("name"), residue)
    return out


def graph(residue: ET.Element) -> tuple[list[ET.Element], dict[str, set[str]]]:
    atoms = residue.findall("Atom")
    nbr: dict[str, set[str]] = {a.get("name"): set() for a in atoms}
    for b in residue.findall("Bond"):
        nbr[b.get("atomName1")].add(b.get("atomName2"))
        nbr[b.get("atomName2")].add(b.get("atomName1"))
    return atoms, nbr


def chain(residue: ET.Element, side: str) -> set[str]:
    """Names of the atoms on the chain side of the CUT bond of ``side``."""
    keep, first = CUT[side]
    _, nbr = graph(residue)
    seen, todo = {first}, [first]
    while todo:
        for n in nbr[todo.pop()] - {keep}:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def splice(name: str, known: dict[str, ET.Element]) -> ET.Element:
    head, sn1, sn2 = (known[n] for n in SPLICED[name])
    pieces = {"sn-1": (sn1, chain(sn1, "sn-1")), "sn-2": (sn2, chain(sn2, "sn-2"))}
    drop = chain(head, "sn-1") | chain(head, "sn-2")
    out = ET.Element("Residue", name=name)
    kept = [a for a in head.findall("Atom") if a.get("name") not in drop]
    for a in kept:
        ET.SubElement(out, "Atom", dict(a.attrib))
    names = {a.get("name") for a in kept}
    for side in ("sn-1", "sn-2"):
        donor, atoms = pieces[side]
        clash = names & atoms
        if clash:
            raise ValueError(f"{name}: {side} atoms {sorted(clash)} of {donor.get('name')} are already named")
        for a in donor.findall("Atom"):
            if a.get("name") in atoms:
                ET.SubElement(out, "Atom", dict(a.attrib))
        names |= atoms
    bonds = [b for b in head.findall("Bond") if b.get("atomName1") not in drop and b.get("atomName2") not in drop]
    for side in ("sn-1", "sn-2"):
        donor, atoms = pieces[side]
        bonds += [b for b in donor.findall("Bond") if b.get("atomName1") in atoms and b.get("atomName2") in atoms]
        bonds.append(ET.Element("Bond", atomName1=CUT[side][0], atomName2=CUT[side][1]))
    for b in bonds:
        ET.SubElement(out, "Bond", dict(b.attrib))
    for p in head.findall("AllowPatch"):
        ET.SubElement(out, "AllowPatch", dict(p.attrib))
    check(name, out, head, pieces)
    return out


def check(name: str, out: ET.Element, head: ET.Element, pieces: dict) -> None:
    atoms, nbr = graph(out)
    charge = sum(float(a.get("charge")) for a in atoms)
    if abs(charge - round(charge)) > 1e-6:
        raise ValueError(f"{name}: total charge {charge:.4f} is not an integer")
    donors = [graph(d)[1] for d in [head] + [d for d, _ in pieces.values()]]
    for a in atoms:
        n = a.get("name")
        valence = {len(d[n]) for d in donors if n in d}
        if len(nbr[n]) not in valence:
            raise ValueError(f"{name}: atom {n} has {len(nbr[n])} bonds, its donors {sorted(valence)}")
    for side, (donor, names) in pieces.items():
        given = {a.get("name"): (a.get("type"), a.get("charge")) for a in donor.findall("Atom")}
        if any(given[a.get("name")] != (a.get("type"), a.get("charge")) for a in atoms if a.get("name") in names):
            raise ValueError(f"{name}: {side} atoms differ from {donor.get('name')}'s")


def main() -> None:
    known = templates()
    blocks = []
    for name in SPLICED:
        residue = splice(name, known)
        ET.indent(residue, space="  ", level=2)
        charge = round(sum(float(a.get("charge")) for a in residue.findall("Atom")))
        print(f"{name}: {len(residue.findall('Atom'))} atoms, {len(residue.findall('Bond'))} bonds, charge {charge}")
        blocks.append("    " + ET.tostring(residue, encoding="unicode").rstrip())
    legend = "\n".join(f"       {n}  {DESCRIPTION[n]}: {h}'s head, {a}'s sn-1, {b}'s sn-2 chain"
                       for n, (h, a, b) in SPLICED.items())
    block = (f"{BEGIN} (GENERATED by scripts/build_lipid_templates.py; do not edit by hand)\n"
             f"       charmm36.xml / DLIP templates spliced at the C31-C32 and C21-C22 bonds:\n{legend} -->\n"
             + "\n".join(blocks) + f"\n    {END}\n")
    text = EXTRA.read_text()
    if BEGIN in text:
        text = text[:text.index(BEGIN)].rstrip(" ") + text[text.index(END) + len(END):].lstrip("\n")
    at = text.index("  </Residues>")
    EXTRA.write_text(text[:at] + "    " + block + text[at:])


if __name__ == "__main__":
    main()

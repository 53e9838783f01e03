"""Compare the shipped lipid mappings' CG names and beads with the Martini 3 lipidome's .itp files.

The lipidome (Pedersen et al., ACS Cent. Sci. 2025; the M3-Lipid-Parameters repository, Apache-2.0,
not shipped here) renamed some Martini 3 v1 (2021) lipids and gave some v1 names to other lipids.
For every shipped lipid this prints the lipidome molecule that its CG name, or its alias in
``chemistry.CG_RESIDUE_ALIASES``, reads as, and whether the beads (names and order of the .itp's
``[ atoms ]``) are the mapping's; a ``chemistry.CG_NAME_CLASHES`` entry is what a user of the
clashing name is told.  Exit status 1 when a lipidome name reads as a mapping with other beads::

    python scripts/compare_lipidome_names.py --itp-dir <M3-Lipid-Parameters>/ITPs
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from openmm_herobm.chemistry import CG_NAME_CLASHES, CG_RESIDUE_ALIASES
from openmm_herobm.mapping import MappingSet


def read_itps(folder: Path) -> dict[str, tuple[list[str], str]]:
    """``{molecule: ([ atoms ] names, description line)}`` of every ``*.itp`` in ``folder``."""
    out: dict = {}
    for path in sorted(folder.glob("*.itp")):
        section, name, description = None, None, ""
        for line in path.read_text(errors="replace").splitlines():
            text = line.strip()
            if "corresponding to atomistic" in text:
                description = text.lstrip("; ")
            header = re.match(r"\[\s*(\w+)\s*\]", text)
            if header:
                section = header.group(1)
                continue
            if not text or text.startswith((";", "#")):
                continue
            if section == "moleculetype":
                name = text.split()[0]
                out[name] = ([], description)
                description = ""
            elif section == "atoms" and name is not None:
                out[name][0].append(text.split()[4])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--itp-dir", type=Path, required=True, help="the lipidome's ITPs folder")
    ap.add_argument("--mapping", default="martini3_lipids")
    args = ap.parse_args(argv)
    lipidome = read_itps(args.itp_dir)
    shipped = MappingSet.load(args.mapping)
    reads_as = {m.cg_residue_name: m.cg_residue_name for m in shipped.molecules}
    reads_as.update({new: known for new, known in CG_RESIDUE_ALIASES.items() if known in reads_as})
    bad = 0
    for name, known in sorted(reads_as.items()):
        if name not in lipidome:
            continue
        mol = shipped.for_cg_residue(known)
        beads, description = lipidome[name]
        same = beads == list(mol.beads)
        note = "same beads" if same else f"OTHER BEADS {' '.join(beads)}"
        if not same and name in CG_NAME_CLASHES:
            note += " (a CG_NAME_CLASHES name: refused with its note)"
        elif not same:
            bad += 1
        print(f"{name:5s} -> {mol.name:5s} {note}; lipidome: {description[:90]}")
    read = {known for name, known in reads_as.items() if name in lipidome}
    missing = sorted(m.cg_residue_name for m in shipped.molecules if m.cg_residue_name not in read)
    print("shipped CG names with no lipidome molecule:", " ".join(missing) or "none")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""Regenerate the shipped lipid mapping set (mappings/martini3_lipids): POPC and cholesterol.

    python scripts/build_lipid_mappings.py [--data DIR] [--no-check]

Sources (``DIR`` defaults to ../shared/data):

* bead membership: CG2AT2's Martini 3 -> CHARMM36 fragments
  (``reference_mappings/cg2at_martini3_charmm36/{POPC,CHOL}.fragment.pdb``, from the
  PyPI wheel cg2at2==1.0.2, ``cg2at/fragments/martini_3-0_charmm36/non_protein/``,
  GPL-3.0).  Each ``[ BEAD ]`` block lists the CHARMM36 atoms of that bead; an atom
  listed under several beads becomes a shared atom with equal weights (none is).
  The template coordinates in the fragments are not used.  Heavy atoms are then moved
  where the fragments disagree with real Martini 3 frames (``MEMBERSHIP_FIXES``,
  below); hydrogens always follow the heavy atom they are bonded to.
* atom names and the bond graph: the CHARMM36 bilayer snapshots
  (``lipids/*.gro.gz``, NMRLipids, GPL-2.0); the names must match the fragments'.
* bead names and order: the real Martini 3 membrane ``cg_real/mstool_mix8_419lipids``
  (POPC ``NC3 PO4 GL1 GL2 C1A D2A C3A C4A C1B C2B C3B C4B``; cholesterol, CG residue
  name ``CHOL``, ``ROH R1 R2 R3 R4 R5 R6 C1 C2``).

Every bead is the mass-weighted centre of its heavy atoms (hydrogens are listed but
carry no weight, ``!``), including the cholesterol beads that are virtual sites in the
Martini 3 model.  The hierarchy comes from ``complete_hierarchy``.

Why the membership fixes.  Forward-mapping the CHARMM36 snapshots with the plain CG2AT
membership and comparing bonded bead distances with the real Martini 3 frame gives
deviations up to 1.3 A (POPC) and 2.4 A (cholesterol):

* POPC: the real frame uses the Martini 3 lipidome parameters (Pedersen et al., ACS
  Cent. Sci. 2025; "Bonded parameters and mapping have been optimized", tails
  ``CDCC`` / ``cCCC``).  Their rule: the ester carbonyl carbon stays in GL1/GL2, the
  acyl carbons from C2 on are grouped in fours from the chain end, and the first tail
  bead takes the remainder (5 carbons for 18:1, a small 3-carbon bead for 16:0).  CG2AT
  instead puts C22/C32 into GL1/GL2 and cuts the chains elsewhere.  With the rule the
  largest deviation drops from 1.33 A to about 0.5 A.
* cholesterol: the real frame uses the Martini 3 sterol model (Borges-Araujo et al.,
  2023: a rigid C1-R1-R2 frame plus virtual sites).  Its R1-R4 do not sit where the
  CG2AT fragment's R1-R4 centres are (e.g. ROH-R1 4.31 A real vs 2.53 A CG2AT, R2-R3
  5.51 vs 3.19 A), and no relabelling of the CG2AT beads fits (best permutation still
  0.7 A rms).  The membership used here was found by superposing the real bead
  geometry on the mapped molecule and assigning every heavy atom to the nearest real
  bead (a fixed point of that assignment, all beads bonded-connected); it reduces the
  all-pairs deviation from 1.22 to 0.44 A rms.  The official CHARMM36 mapping of that
  model was not available offline; replace ``CHOL_FITTED`` with it when it is.

The six other lipids of the real frame (SSM, DLPE, PAPC, PAPS, POPE, SAP6; ``TEMPLATE_MOLECULES``)
and the further glycerophospholipids of ``chemistry.LIPID_COMPOSITION`` (PC, PE, PS, PG and PA heads
x palmitoyl/oleoyl/lauroyl/linoleoyl tails, built generically from head + tails:
``glycerophospholipid``) and DPSM (CHARMM36 PSM, ``sphingomyelin``) have no all-atom snapshot: their atom names and bonds come from the CHARMM36 templates
(``charmm36.xml`` and the package's ``pipeline/charmm36_lipids_extra.xml``; all-atom names
DLIP = CHARMM36 DLIPE and SAP6 = SAPI24, at most 4 characters for PDB files), their heavy-atom
membership is written out below: head beads as POPC's (the choline/serine atoms and C11 in
the head bead; PE's C11 in PO4, as mstool, 0.1 A closer to the real NH3-PO4 distance; the
phosphate in PO4, glycerol C1/C2 with the sn-2 ester in GL1, C3 with the sn-1 ester in GL2;
mstool 0.3.9's Martini 3 mapping file for these lipids, ``examples/BackmappingMartini3/mapping.dat``,
GPL-3.0, puts C1 in PO4 and groups the tails otherwise), tails by the same lipidome rule as POPC; SSM and the PI(4,5)P2 head of SAP6: see ``SSM_BEADS`` and
``SAP6_HEAD``.  ``--check-structures DIR`` compares their bonded bead distances in all-atom
structures (``scripts/build_lipid_conformers.py`` output) with the real frame.

Unless ``--no-check`` is given, the script then forward-maps every CHARMM36 snapshot
and prints, for every pair of covalently linked beads, the mean distance in the mapped
frames next to the one in the real Martini 3 frame (and with the plain CG2AT
membership, for comparison).
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import warnings
from collections import deque
from pathlib import Path

import mdtraj
import numpy as np
import yaml

from openmm_herobm.chemistry import ACYL_CHAINS, LIPID_COMPOSITION, SPHINGOMYELINS
from openmm_herobm.mapping import bonds_from_structure, complete_hierarchy
from openmm_herobm.mapping.molecule import (BeadMembership, MappedAtom, MoleculeMapping, element_from_name,
                                            parse_molecule_mapping)

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"
OUT = ROOT / "mappings" / "martini3_lipids"

#: all-atom residue name -> (fragment stem, CG residue name, bead order of real Martini 3 frames)
MOLECULES = {
    "POPC": ("POPC", "POPC", ["NC3", "PO4", "GL1", "GL2", "C1A", "D2A", "C3A", "C4A", "C1B", "C2B", "C3B", "C4B"]),
    "CHL": ("CHOL", "CHOL", ["ROH", "R1", "R2", "R3", "R4", "R5", "R6", "C1", "C2"]),
}
#: expected covalent bonds (atoms - 1 + rings): POPC 134 atoms, acyclic; cholesterol
#: 74 atoms, four fused rings.
EXPECTED_BONDS = {"POPC": 134 - 1, "CHL": 74 - 1 + 4}
#: number of bonds per element (sp2 carbons of the esters and the double bonds have 3),
#: for the sanity check of the distance-derived bond graph
VALENCE = {"H": {1}, "C": {3, 4}, "N": {4}, "O": {1, 2}, "P": {4}}
#: snapshot holding both molecules (bonds and names are taken from its first residues)
REFERENCE_SNAPSHOT = "lipids/charmm36_POPCchol-20pct.gro.gz"
REAL_CG_FRAME = "cg_real/mstool_mix8_419lipids.gro.gz"


def lipidome_tail(prefix: str, first: int, last: int, beads: list[str]) -> dict[str, str]:
    """Martini 3 lipidome tail rule: acyl carbons ``prefix+first .. prefix+last`` (the
    carbonyl carbon excluded) grouped in fours from the chain end; the first bead takes
    the remainder (3 or 5 carbons)."""
    carbons = [f"{prefix}{i}" for i in range(first, last + 1)]
    sizes = [4] * (len(beads) - 1)
    sizes.insert(0, len(carbons) - sum(sizes))
    if not 3 <= sizes[0] <= 5:
        raise ValueError(f"tail {prefix}: first bead would hold {sizes[0]} carbons")
    out, k = {}, 0
    for bead, n in zip(beads, sizes):
        for atom in carbons[k:k + n]:
            out[atom] = bead
        k += n
    return out


#: Cholesterol heavy-atom membership fitted to the real Martini 3 sterol model (see the
#: module docstring).  ROH: hydroxyl + C3 and its ring neighbours; R1: ring B with the
#: C5=C6 double bond; R2: C1, C9 around C10; R3: ring D without C13; R4: ring C's C11,
#: C12; R5: the C19 methyl; R6: the C18 methyl with C13; C1/C2: the tail, as in CG2AT.
CHOL_FITTED = {
    "ROH": "O3 C3 C2 C4", "R1": "C5 C6 C7 C8", "R2": "C1 C9 C10", "R3": "C14 C15 C16 C17", "R4": "C11 C12",
    "R5": "C19", "R6": "C13 C18", "C1": "C20 C21 C22 C23", "C2": "C24 C25 C26 C27",
}

#: residue -> {heavy atom: bead} replacing the CG2AT membership of those atoms
MEMBERSHIP_FIXES = {
    "POPC": {**lipidome_tail("C2", 2, 18, ["C1A", "D2A", "C3A", "C4A"]),   # 18:1 oleoyl (sn-2), CDCC
             **lipidome_tail("C3", 2, 16, ["C1B", "C2B", "C3B", "C4B"])},  # 16:0 palmitoyl (sn-1), cCCC
    "CHL": {atom: bead for bead, atoms in CHOL_FITTED.items() for atom in atoms.split()},
}


def _beads(table: dict[str, str]) -> dict[str, list[str]]:
    """{bead: "atom atom ..."} -> {heavy atom: [beads]} (an atom under several beads is shared)."""
    out: dict[str, list[str]] = {}
    for bead, atoms in table.items():
        for atom in atoms.split():
            out.setdefault(atom, []).append(bead)
    return out


def _tail(prefix: str, first: int, last: int, beads: list[str]) -> dict[str, str]:
    """lipidome_tail as {bead: "atoms"}."""
    out: dict[str, list[str]] = {}
    for atom, bead in lipidome_tail(prefix, first, last, beads).items():
        out.setdefault(bead, []).append(atom)
    return {b: " ".join(a) for b, a in out.items()}


GLYCEROL = {"PO4": "P O11 O12 O13 O14", "GL1": "C1 C2 O21 C21 O22", "GL2": "C3 O31 C31 O32"}
HEADS = {"PC": {"NC3": "N C12 C13 C14 C15 C11"}, "PE": {"NH3": "N C12", "PO4": "C11 P O11 O12 O13 O14"},
         "PS": {"CNO": "N C12 C13 O13A O13B C11"},
         # PG: the head glycerol C2'-C3' with both hydroxyls in GL0, its C1' (C11) in PO4 as PE's (and
         # mstool's Martini mapping); PA: the protonated phosphate (its H follows O12) is PO4
         "PG": {"GL0": "C12 C13 OC2 OC3", "PO4": "C11 P O11 O12 O13 O14"}, "PA": {}}
#: PI(4,5)P2 head of SAP6 (Martini 3 phosphoinositides, Borges-Araujo et al. 2022: ring beads
#: C1-C3, C4 a virtual site near the ring centre, P4/P5 the ring phosphates).  Fitted like the
#: cholesterol beads: the real frame's bead geometry superposed on a CHARMM36 SAP6 and each head
#: atom given to the nearest bead (C1 nearest PO4, P4 nearest C3, P5 nearest C2 in the real
#: frame); C4, which has no atoms of its own, is the centre of the six ring carbons (shared).
SAP6_HEAD = {"C1": "C11 C12 O2", "C2": "C15 C16 O5 O6", "C3": "C13 C14 O3", "C4": "C11 C12 C13 C14 C15 C16",
             "P4": "O4 P4 OP42 OP43 OP44", "P5": "P5 OP52 OP53 OP54"}
#: SSM (N-stearoyl sphingomyelin d18:1/18:0): phosphocholine as POPC's; OH1 the sphingosine
#: C1S-C3S with the 3-hydroxyl (glycerol-like, C1S as POPC's C1 in GL1); AM2 the amide N-C(=O);
#: the sphingosine chain C4S-C18S (T1A the trans C4S=C5S end) and the N-stearoyl C2F-C18F
#: by the lipidome rule (C2F in C1B as POPC's C22 in C1A)
SSM_BEADS = {**HEADS["PC"], "PO4": "P O11 O12 O13 O14", "OH1": "C1S C2S C3S O3", "AM2": "NF C1F OF",
             "T1A": "C4S C5S C6S", "C2A": "C7S C8S C9S C10S", "C3A": "C11S C12S C13S C14S",
             "C4A": "C15S C16S C17S C18S",
             **{b: " ".join(f"C{k}F" for k in ks) for b, ks in
                (("C1B", range(2, 7)), ("C2B", range(7, 11)), ("C3B", range(11, 15)), ("C4B", range(15, 19)))}}

#: all-atom (CHARMM36) name -> Martini 3 CG name, where they differ.  Martini 3 names the
#: tails by bead count: its "DP" (4-bead saturated tails) stands for C16 and C18 alike, its
#: "DL" for C12 (3 beads; CHARMM36 DLPC is dilauroyl too); we give each name the chemistry of
#: the .itp comment (DPPC = 16:0/16:0, DOPC = 18:1/18:1, PIPC = 16:0/18:2, ...).  One exception,
#: the real frame's DLPE: its tails are linoleoyl (D beads; M3 v1 calls that model DIPE, read
#: as DLPE by chemistry.CG_RESIDUE_ALIASES), so Martini 3 v1's dilauroyl DLPE is not covered.
MARTINI_NAMES = {"DLIP": "DLPE", "PLPC": "PIPC", "PLPE": "PIPE", "PSM": "DPSM",
                 # dilauroyl: the lipidome's names (its DLPx are dilinoleoyl; M3 v1's DLPE is the real frame's
                 # dilinoleoyl DLIP); the other lipids added in session 10 have the lipidome's names too
                 "DLPE": "DUPE", "DLPS": "DUPS", "DLPG": "DUPG", "DLPA": "DUPA",
                 # dilinoleoyl: the lipidome's DLPS/DLPG/DLPA; its DLPC is M3 v1's dilauroyl DLPC here, so
                 # dilinoleoyl-PC keeps v1's DIPC (the lipidome's DLPC is read by its beads:
                 # chemistry.CG_NAME_ALTERNATIVES)
                 "DIPS": "DLPS", "DIPG": "DLPG", "DIPA": "DLPA"}
#: Martini 3 head beads before PO4 (PA has none)
HEAD_BEADS = {"PC": ["NC3"], "PE": ["NH3"], "PS": ["CNO"], "PG": ["GL0"], "PA": []}
#: Martini 3 tail beads per acyl chain (C saturated, D with a cis double bond), numbered from the glycerol
TAIL_BEADS = {"lauroyl": "CCC", "palmitoyl": "CCCC", "stearoyl": "CCCC", "oleoyl": "CDCC", "linoleoyl": "CDDC",
              "arachidonoyl": "CDDDC"}


def tail_beads(chain: str, letter: str) -> list[str]:
    return [f"{kind}{i}{letter}" for i, kind in enumerate(TAIL_BEADS[chain], 1)]


def glycerophospholipid(resname: str) -> tuple[str, str, dict[str, str]]:
    """(CG name, bead order, {bead: heavy atoms}) of a LIPID_COMPOSITION lipid with a PC/PE/PS/PG/PA
    head: the head as HEADS, glycerol as GLYCEROL, sn-2 (CHARMM36 C2x) in the A beads and sn-1 (C3x)
    in the B beads by the lipidome rule."""
    head, sn1, sn2 = LIPID_COMPOSITION[resname]
    a, b = tail_beads(sn2, "A"), tail_beads(sn1, "B")
    order = HEAD_BEADS[head] + ["PO4", "GL1", "GL2"] + a + b
    table = {**GLYCEROL, **HEADS[head], **_tail("C2", 2, ACYL_CHAINS[sn2][0], a),
             **_tail("C3", 2, ACYL_CHAINS[sn1][0], b)}
    return MARTINI_NAMES.get(resname, resname), " ".join(order), table


def sphingomyelin(resname: str) -> tuple[str, str, dict[str, str]]:
    """SSM_BEADS with the N-acyl chain (C2F..) of SPHINGOMYELINS cut by the lipidome rule."""
    n = ACYL_CHAINS[SPHINGOMYELINS[resname]][0]
    chain = _tail("C", 2, n, ["C1B", "C2B", "C3B", "C4B"])  # C2 .. Cn, named C2F .. CnF in CHARMM36
    table = {**SSM_BEADS, **{bead: " ".join(f"{a}F" for a in atoms.split()) for bead, atoms in chain.items()}}
    return MARTINI_NAMES.get(resname, resname), "NC3 PO4 OH1 AM2 T1A C2A C3A C4A C1B C2B C3B C4B", table


#: the template molecules that the real Martini 3 frame holds (their bead order is checked against it)
IN_REAL_FRAME = ("POPE", "DLIP", "PAPC", "PAPS", "SAP6", "SSM")
#: all-atom name -> (CG name, Martini 3 bead order, {bead: heavy atoms})
TEMPLATE_MOLECULES = {
    **{n: glycerophospholipid(n) for n, (head, _, _) in LIPID_COMPOSITION.items() if n != "POPC" and head != "PIP2"},
    "SAP6": ("SAP6", "C1 C2 C3 C4 PO4 P4 P5 GL1 GL2 C1A D2A D3A D4A C5A C1B C2B C3B C4B",
             {**SAP6_HEAD, **GLYCEROL, **_tail("C2", 2, 20, ["C1A", "D2A", "D3A", "D4A", "C5A"]),
              **_tail("C3", 2, 18, ["C1B", "C2B", "C3B", "C4B"])}),
    **{n: sphingomyelin(n) for n in SPHINGOMYELINS},
}


def build_from_template(resname: str, forcefield) -> MoleculeMapping:
    """A TEMPLATE_MOLECULES mapping: names and bonds of the CHARMM36 template, hydrogens with
    their heavy atom's bead(s) and no weight, heavy atoms shared equally where listed twice."""
    cg_name, order, table = TEMPLATE_MOLECULES[resname]
    order = order.split()
    template = forcefield._templates[resname]
    names = [a.name for a in template.atoms]
    bonds = [(names[i], names[j]) for i, j in template.bonds]
    heavy = _beads(table)
    wanted = {a.name for a in template.atoms if a.element.symbol != "H"}
    if set(heavy) != wanted or set(table) != set(order):
        raise ValueError(f"{resname}: membership atoms differ from the template's heavy atoms: only listed "
                         f"{sorted(set(heavy) - wanted)}, unlisted {sorted(wanted - set(heavy))}; beads {sorted(set(table) ^ set(order))}")
    parent = {}
    for a, b in bonds:
        for h, x in ((a, b), (b, a)):
            if element_from_name(h) == "H" and element_from_name(x) != "H":
                parent[h] = x
    atoms = []
    for a in template.atoms:
        element = a.element.symbol
        beads = heavy[a.name] if element != "H" else heavy[parent[a.name]]
        share = 0.0 if element == "H" else 1.0 / len(beads)
        atoms.append(MappedAtom(a.name, (), element, tuple(BeadMembership(b, share) for b in beads)))
    mapping = MoleculeMapping(resname, atoms, order, cg_name=cg_name if cg_name != resname else None, bonds=bonds,
                              source=f"CHARMM36 template {resname}")
    return complete_hierarchy(mapping, bonds)


def write_template_molecule(mapping: MoleculeMapping, path: Path) -> None:
    header = (
        f"# {mapping.name}: GENERATED by scripts/build_lipid_mappings.py -- do not edit by hand.\n"
        "# Atom names and bonds: CHARMM36 template (charmm36.xml + openmm_herobm/pipeline/charmm36_lipids_extra.xml).\n"
        "# Bead membership: written out in the script (TEMPLATE_MOLECULES): heads as POPC's, compared with\n"
        "#   mstool 0.3.9's Martini 3 mapping (GPL-3.0); tails by the Martini 3 lipidome rule.\n"
        + ("# Bead names/order: real Martini 3 frames (mstool example membrane).\n" if mapping.name in IN_REAL_FRAME else
           "# Bead names/order: the Martini 3 .itp (martini_v3.0.0_phospholipids_v1, Souza et al. 2021, @BEADS;\n"
           "#   heads and tails named as in the real frame's lipids; DPSM: the real frame's SSM beads).\n")
        + "# Beads are mass-weighted centres of their heavy atoms; hydrogens carry no weight (!).\n"
    )
    text = header + mapping.to_yaml()
    back = parse_molecule_mapping(yaml.safe_load(text), str(path))
    if back.to_yaml() != mapping.to_yaml():
        raise ValueError(f"{path}: YAML round trip changed the mapping")
    path.write_text(text)


# ---------------------------------------------------------------------- inputs
def load_gro_gz(path: Path) -> mdtraj.Trajectory:
    """mdtraj cannot read ``.gro.gz``: decompress to a temporary file first."""
    with tempfile.TemporaryDirectory() as tmp:
        plain = os.path.join(tmp, "frame.gro")
        with gzip.open(path, "rb") as src, open(plain, "wb") as dst:
            dst.write(src.read())
        return mdtraj.load(plain)


def parse_fragment(path: Path) -> dict[str, list[str]]:
    """CG2AT fragment -> {bead: [atom names]} in file order."""
    beads: dict[str, list[str]] = {}
    bead = None
    for line in path.read_text().splitlines():
        if line.startswith("["):
            bead = line.strip().strip("[]").strip()
            beads.setdefault(bead, [])
        elif line.startswith(("ATOM", "HETATM")):
            if bead is None:
                raise ValueError(f"{path}: atom line before the first [ BEAD ] header")
            beads[bead].append(line[12:16].strip())
    return beads


def box_lengths(traj: mdtraj.Trajectory) -> np.ndarray:
    if not np.allclose(traj.unitcell_angles, 90.0):
        raise ValueError("only rectangular boxes are supported here")
    return traj.unitcell_lengths[0].astype(np.float64)


def unwrap_along_bonds(xyz: np.ndarray, bonds: list[tuple[int, int]], box: np.ndarray) -> np.ndarray:
    """Make one molecule whole: walk its bond graph, applying the minimum image per bond."""
    xyz = np.array(xyz, dtype=np.float64)
    neighbours: dict[int, list[int]] = {i: [] for i in range(len(xyz))}
    for a, b in bonds:
        neighbours[a].append(b)
        neighbours[b].append(a)
    seen = {0}
    queue = deque([0])
    while queue:
        p = queue.popleft()
        for c in neighbours[p]:
            if c not in seen:
                d = xyz[c] - xyz[p]
                xyz[c] = xyz[p] + d - box * np.round(d / box)
                seen.add(c)
                queue.append(c)
    if len(seen) != len(xyz):
        raise ValueError("bond graph is not connected")
    return xyz


def unwrap_min_image(xyz: np.ndarray, box: np.ndarray) -> np.ndarray:
    """Minimum image of every position relative to the first one (small molecules)."""
    d = xyz - xyz[0]
    return xyz[0] + d - box * np.round(d / box)


# ---------------------------------------------------------------------- building
def molecule_bonds(residue, xyz: np.ndarray, box: np.ndarray) -> list[tuple[str, str]]:
    """Covalent bonds of one residue (heavy atoms and hydrogens) by distance.

    The residue is first brought into one image relative to its first atom, which is
    enough for the chosen residue; the bond graph is then checked (count, valences,
    connectivity) by the caller, and against every residue of every snapshot.
    """
    atoms = list(residue.atoms)
    pos = unwrap_min_image(xyz[[a.index for a in atoms]], box)
    return bonds_from_structure([(a.name, element_from_name(a.name), p) for a, p in zip(atoms, pos)])


def check_bonds(resname: str, names: list[str], bonds: list[tuple[str, str]]) -> None:
    if len(bonds) != EXPECTED_BONDS[resname]:
        raise ValueError(f"{resname}: {len(bonds)} bonds found from the structure, expected {EXPECTED_BONDS[resname]}")
    degree = {n: 0 for n in names}
    for a, b in bonds:
        degree[a] += 1
        degree[b] += 1
    for n, d in degree.items():
        if d not in VALENCE[element_from_name(n)]:
            raise ValueError(f"{resname}: atom {n} has {d} bonds")
    index = {n: i for i, n in enumerate(names)}
    unwrap_along_bonds(np.zeros((len(names), 3)), [(index[a], index[b]) for a, b in bonds], np.ones(3))  # connected?


def heavy_membership(names: list[str], fragment: dict[str, list[str]], fixes: dict[str, str]) -> dict[str, list[str]]:
    """Heavy atom -> beads: the fragment's, replaced by ``fixes`` where given."""
    beads_of: dict[str, list[str]] = {}
    for bead, members in fragment.items():
        for n in members:
            beads_of.setdefault(n, []).append(bead)
    if set(names) != set(beads_of) or len(set(names)) != len(names):
        raise ValueError(f"snapshot atoms and fragment atoms differ: only in snapshot "
                         f"{sorted(set(names) - set(beads_of))}, only in fragment {sorted(set(beads_of) - set(names))}")
    unknown = set(fixes) - set(names)
    if unknown or any(element_from_name(n) == "H" for n in fixes):
        raise ValueError(f"membership fixes name unknown atoms or hydrogens: {sorted(unknown)}")
    return {n: ([fixes[n]] if n in fixes else beads_of[n]) for n in names if element_from_name(n) != "H"}


def build_molecule(resname: str, fragment: dict[str, list[str]], cg_name: str, bead_order: list[str],
                   traj: mdtraj.Trajectory, fragment_path: Path, fixes: dict[str, str]) -> MoleculeMapping:
    if list(fragment) != bead_order:
        raise ValueError(f"{fragment_path}: beads {list(fragment)} differ from the expected {bead_order}")
    residue = next(r for r in traj.topology.residues if r.name == resname)
    names = [a.name for a in residue.atoms]
    bonds = molecule_bonds(residue, traj.xyz[0], box_lengths(traj))
    check_bonds(resname, names, bonds)
    heavy = heavy_membership(names, fragment, fixes)
    # a hydrogen belongs to the bead(s) of the heavy atom it is bonded to
    parent = {}
    for a, b in bonds:
        for h, x in ((a, b), (b, a)):
            if element_from_name(h) == "H":
                parent[h] = x
    atoms = []
    for n in names:  # CHARMM36 order of the snapshot
        element = element_from_name(n)
        beads = heavy[n] if element != "H" else heavy[parent[n]]
        share = 0.0 if element == "H" else 1.0 / len(beads)
        atoms.append(MappedAtom(n, (), element, tuple(BeadMembership(b, share) for b in beads)))
    mapping = MoleculeMapping(resname, atoms, list(bead_order), cg_name=cg_name if cg_name != resname else None,
                              bonds=bonds, source=str(fragment_path))
    return complete_hierarchy(mapping, bonds)


def check_bonds_everywhere(mapping: MoleculeMapping, snapshots: list[Path]) -> int:
    """Every residue of every snapshot, made whole along the bond graph, has the same bonds."""
    reference = {frozenset(b) for b in mapping.bonds}
    index = {a.name: i for i, a in enumerate(mapping.atoms)}
    n = 0
    for path in snapshots:
        traj = load_gro_gz(path)
        box = box_lengths(traj)
        for residue in traj.topology.residues:
            if residue.name != mapping.name:
                continue
            atoms = list(residue.atoms)
            local = {a.name: k for k, a in enumerate(atoms)}
            pos = unwrap_along_bonds(traj.xyz[0][[a.index for a in atoms]].astype(np.float64),
                                     [(local[a], local[b]) for a, b in mapping.bonds], box)
            found = {frozenset(b) for b in bonds_from_structure(
                [(a.name, mapping.atoms[index[a.name]].element, p) for a, p in zip(atoms, pos)])}
            if found != reference:
                raise ValueError(f"{path.name} {residue}: bonds differ from the reference: "
                                 f"extra {sorted(map(sorted, found - reference))}, missing {sorted(map(sorted, reference - found))}")
            n += 1
    return n


def write(mapping: MoleculeMapping, path: Path, fragment_name: str, fixed: str) -> None:
    header = (
        f"# {mapping.name}: GENERATED by scripts/build_lipid_mappings.py -- do not edit by hand.\n"
        f"# Bead membership: CG2AT2 Martini 3 -> CHARMM36 fragment {fragment_name}\n"
        "#   (cg2at2 1.0.2, cg2at/fragments/martini_3-0_charmm36/non_protein/; GPL-3.0),\n"
        f"#   {fixed}\n"
        "# Atom names and bonds: CHARMM36 bilayer snapshot (NMRLipids, GPL-2.0).\n"
        "# Bead names/order: real Martini 3 frames (mstool example membrane).\n"
        "# Beads are mass-weighted centres of their heavy atoms; hydrogens carry no weight (!).\n"
        "# Derived from GPL-3.0 data: this file is distributed under GPL-3.0.\n"
    )
    text = header + mapping.to_yaml()
    back = parse_molecule_mapping(yaml.safe_load(text), str(path))  # round-trip check
    if back.to_yaml() != mapping.to_yaml():
        raise ValueError(f"{path}: YAML round trip changed the mapping")
    path.write_text(text)


FIX_NOTES = {
    "POPC": "with the acyl tails re-cut by the Martini 3 lipidome rule (Pedersen et al. 2025; see the script).",
    "CHL": "with the ring beads re-fitted to the Martini 3 sterol model geometry (Borges-Araujo et al. 2023; see the script).",
}


def hierarchy_depths(mapping: MoleculeMapping) -> dict[str, int]:
    return {b: max(s.level for s in mapping.slots(b)) for b in mapping.beads}


# ---------------------------------------------------------------------- checking
def bonded_bead_pairs(mapping: MoleculeMapping) -> list[tuple[str, str]]:
    """Pairs of beads linked by at least one covalent bond between their heavy atoms."""
    beads_of = {a.name: [m.bead for m in a.memberships] for a in mapping.atoms}
    heavy = {a.name for a in mapping.atoms if not a.is_hydrogen}
    pairs = set()
    for a, b in mapping.bonds:
        if a in heavy and b in heavy:
            for ba in beads_of[a]:
                for bb in beads_of[b]:
                    if ba != bb:
                        pairs.add(tuple(sorted((ba, bb), key=mapping.beads.index)))
    return sorted(pairs, key=lambda p: (mapping.beads.index(p[0]), mapping.beads.index(p[1])))


def mapped_bead_positions(mapping_set, snapshots: list[Path]) -> dict[str, np.ndarray]:
    """CG residue name -> (n_residues, n_beads, 3) bead positions (nm) from whole molecules."""
    from openmm_herobm.mapping import SystemMapping

    out: dict[str, list[np.ndarray]] = {}
    for path in snapshots:
        traj = load_gro_gz(path) if path.suffix == ".gz" else mdtraj.load(str(path))
        box = box_lengths(traj)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # water/ions have no mapping
            system = SystemMapping.from_atomistic(traj.topology, mapping_set, unmapped="drop")
        xyz = traj.xyz[0].astype(np.float64)
        for res in system.residues:
            mol = res.mapping
            local = {a.name: k for k, a in enumerate(mol.atoms)}
            xyz[res.atoms] = unwrap_along_bonds(xyz[res.atoms], [(local[a], local[b]) for a, b in mol.bonds], box)
        beads = system.map(xyz)
        for res in system.residues:
            out.setdefault(res.mapping.cg_residue_name, []).append(beads[res.beads])
    return {k: np.stack(v) for k, v in out.items()}


def real_bead_positions(path: Path, bead_orders: dict[str, list[str]]) -> dict[str, np.ndarray]:
    traj = load_gro_gz(path)
    box = box_lengths(traj)
    out: dict[str, list[np.ndarray]] = {}
    for residue in traj.topology.residues:
        if residue.name not in bead_orders:
            continue
        names = [a.name for a in residue.atoms]
        if names != bead_orders[residue.name]:
            raise ValueError(f"{path.name} {residue}: beads {names}, expected {bead_orders[residue.name]}")
        out.setdefault(residue.name, []).append(unwrap_min_image(traj.xyz[0][[a.index for a in residue.atoms]], box))
    return {k: np.stack(v) for k, v in out.items()}


def compare(mappings: list[MoleculeMapping], data: Path, baseline: list[MoleculeMapping] | None = None,
            snapshots: list[Path] | None = None) -> list[tuple]:
    """Rows (mol, pair, ours mean, ours sd, real mean, real sd, ours - real, baseline - real) in A."""
    from openmm_herobm.mapping import MappingSet

    snapshots = snapshots or sorted((data / "lipids").glob("*.gro.gz"))
    ours = mapped_bead_positions(MappingSet(mappings, name="martini3_lipids"), snapshots)
    base = mapped_bead_positions(MappingSet(baseline, name="cg2at"), snapshots) if baseline else None
    real = real_bead_positions(data / REAL_CG_FRAME, {m.cg_residue_name: m.beads for m in mappings})
    rows = []
    for mol in mappings:
        cg = mol.cg_residue_name
        for a, b in bonded_bead_pairs(mol):
            ia, ib = mol.beads.index(a), mol.beads.index(b)
            d_ours = np.linalg.norm(ours[cg][:, ia] - ours[cg][:, ib], axis=-1) * 10
            d_real = np.linalg.norm(real[cg][:, ia] - real[cg][:, ib], axis=-1) * 10
            d_base = np.linalg.norm(base[cg][:, ia] - base[cg][:, ib], axis=-1).mean() * 10 if base else np.nan
            rows.append((cg, f"{a}-{b}", d_ours.mean(), d_ours.std(), d_real.mean(), d_real.std(),
                         d_ours.mean() - d_real.mean(), d_base - d_real.mean()))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder (default: %(default)s)")
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with the real Martini 3 frame")
    parser.add_argument("--check-structures", type=Path, default=None,
                        help="folder of all-atom .gro files with the TEMPLATE_MOLECULES lipids "
                             "(build_lipid_conformers.py output) for their comparison with the real frame")
    args = parser.parse_args(argv)
    data = args.data

    import openmm.app as app

    forcefield = app.ForceField("charmm36.xml", str(ROOT / "openmm_herobm" / "pipeline" / "charmm36_lipids_extra.xml"))
    OUT.mkdir(parents=True, exist_ok=True)
    templated = []
    for resname in TEMPLATE_MOLECULES:
        mapping = build_from_template(resname, forcefield)
        write_template_molecule(mapping, OUT / f"{resname}.yaml")
        templated.append(mapping)
        print(f"{resname} (CG {mapping.cg_residue_name}): {len(mapping.atoms)} atoms, {len(mapping.bonds)} bonds, "
              f"beads {mapping.beads}; hierarchy depth per bead: {hierarchy_depths(mapping)}")
    if args.check_structures is not None:
        files = sorted(args.check_structures.glob("*.gro"))
        print(f"\nbonded bead distances (A): {len(files)} structures of {args.check_structures} vs the real frame")
        worst = {}
        for cg, pair, mo, so, mr, sr, diff, _ in compare(templated, data, None, files):
            print(f"{cg:5s} {pair:9s} {mo:6.2f} {so:5.2f} {mr:6.2f} {sr:5.2f} {diff:+6.2f}")
            worst.setdefault(cg, []).append(abs(diff))
        for cg, w in worst.items():
            print(f"{cg}: mean |diff| {np.mean(w):.2f} A, largest {np.max(w):.2f} A")

    reference = load_gro_gz(data / REFERENCE_SNAPSHOT)
    snapshots = sorted((data / "lipids").glob("*.gro.gz"))
    OUT.mkdir(parents=True, exist_ok=True)
    mappings, plain = [], []
    for resname, (stem, cg_name, bead_order) in MOLECULES.items():
        fragment_path = data / "reference_mappings" / "cg2at_martini3_charmm36" / f"{stem}.fragment.pdb"
        fragment = parse_fragment(fragment_path)
        mapping = build_molecule(resname, fragment, cg_name, bead_order, reference, fragment_path,
                                 MEMBERSHIP_FIXES.get(resname, {}))
        plain.append(build_molecule(resname, fragment, cg_name, bead_order, reference, fragment_path, {}))
        n = check_bonds_everywhere(mapping, snapshots)
        write(mapping, OUT / f"{resname}.yaml", f"{stem}.pdb", FIX_NOTES[resname])
        mappings.append(mapping)
        moved = {a.name: (p.memberships[0].bead, a.memberships[0].bead) for a, p in zip(mapping.atoms, plain[-1].atoms)
                 if not a.is_hydrogen and [m.bead for m in a.memberships] != [m.bead for m in p.memberships]}
        print(f"{resname}: {len(mapping.atoms)} atoms, {len(mapping.bonds)} bonds (same in all {n} residues of "
              f"the snapshots), beads {mapping.beads}")
        print(f"  heavy atoms moved from the CG2AT bead: {', '.join(f'{k} {a}->{b}' for k, (a, b) in moved.items())}")
        print(f"  hierarchy depth per bead: {hierarchy_depths(mapping)}")
    print("wrote", OUT)

    if args.no_check:
        return
    print("\nbonded bead distances (A): CHARMM36 snapshots mapped with this set vs the real Martini 3 frame")
    print(f"{'mol':5s} {'pair':9s} {'ours':>6s} {'sd':>5s} {'real':>6s} {'sd':>5s} {'diff':>6s} {'CG2AT diff':>10s}")
    worst = {}
    for cg, pair, mo, so, mr, sr, diff, base in compare(mappings, data, plain):
        print(f"{cg:5s} {pair:9s} {mo:6.2f} {so:5.2f} {mr:6.2f} {sr:5.2f} {diff:+6.2f} {base:+10.2f}")
        worst.setdefault(cg, []).append(abs(diff))
    for cg, w in worst.items():
        print(f"{cg}: mean |diff| {np.mean(w):.2f} A, largest {np.max(w):.2f} A")


if __name__ == "__main__":
    main(sys.argv[1:])

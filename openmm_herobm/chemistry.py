"""The chemistry the package knows, one home per fact: residue names and their variants, the
backbone and its ideal geometry, Martini solvent, bond-distance thresholds, stereo centres and
the ideal CB.

Plain Python (no numpy, torch, mdtraj or openmm), so anything may import it at no cost.
Lengths in Angstrom, angles in degrees.  Geometry computed from these lives in
:mod:`openmm_herobm.geometry`.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- residues

#: the 20 standard amino acids
AMINO_ACIDS = frozenset("ALA ARG ASN ASP CYS GLN GLU GLY HIS ILE LEU LYS MET PHE PRO SER THR TRP TYR VAL".split())
#: terminal caps (acetyl, N-methylamide)
CAPS = frozenset({"ACE", "NME"})
#: protonation and force-field variant names -> their standard residue.  A variant has the heavy
#: atoms and bonds of its standard residue, so it uses the standard's templates and tables.
#: (The only such table: ``tests/test_chemistry.py`` fails on a second one.)
VARIANT_STANDARD = {"HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS", "HSP": "HIS",
                    "CYX": "CYS", "CYM": "CYS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS"}
#: the protonation state ``Modeller.addHydrogens`` builds for each variant name: CHARMM's
#: HSD/HSE/HSP are AMBER's HID/HIE/HIP, CYM has no HG (as CYX); None for CYX, whose
#: state comes from its disulfide bond
MODELLER_VARIANT = {"HID": "HID", "HIE": "HIE", "HIP": "HIP", "HSD": "HID", "HSE": "HIE", "HSP": "HIP",
                    "ASH": "ASH", "GLH": "GLH", "LYN": "LYN", "CYM": "CYX", "CYX": None}
#: modified residues that have the geometry of a standard one (selenomethionine: SE where MET has
#: SD, so MET's bond templates, which name SD, do not apply to it)
MODIFIED_STANDARD = {"MSE": "MET"}
#: every residue name the protein path handles: amino acids, caps and the variant names
PROTEIN_RESIDUES = AMINO_ACIDS | CAPS | frozenset(VARIANT_STANDARD)

#: cholesterol: the shipped mapping's name, CHARMM36/CHARMM-GUI's, and that of many GROMACS setups
CHOLESTEROL = ("CHL", "CHL1", "CHOL")
#: acyl chains of the lipid model: name -> (carbons, k of every cis Ck=C(k+1) double bond)
ACYL_CHAINS = {"lauroyl": (12, ()), "palmitoyl": (16, ()), "stearoyl": (18, ()), "oleoyl": (18, (9,)),
               "linoleoyl": (18, (9, 12)), "arachidonoyl": (20, (5, 8, 11, 14))}
#: glycerophospholipids of the lipid model (all-atom = CHARMM36 names, at most 4 characters for PDB
#: files: DLIP is CHARMM36's DLIPE, SAP6 its SAPI24; PAPC, PAPS, DLIP, SAP6 and the spliced DIPx and
#: PAPE/PAPG/PAPA templates in pipeline/charmm36_lipids_extra.xml, the others in charmm36.xml)
#: -> (head, sn-1 chain, sn-2 chain).
#: CHARMM36 names the sn-2 acyl carbons C21.., the sn-1 ones C31..  (Martini names: see
#: scripts/build_lipid_mappings.py, MARTINI_NAMES)
LIPID_COMPOSITION = {
    "POPC": ("PC", "palmitoyl", "oleoyl"), "POPE": ("PE", "palmitoyl", "oleoyl"),
    "DLIP": ("PE", "linoleoyl", "linoleoyl"), "PAPC": ("PC", "palmitoyl", "arachidonoyl"),
    "PAPS": ("PS", "palmitoyl", "arachidonoyl"), "SAP6": ("PIP2", "stearoyl", "arachidonoyl"),
    "DPPC": ("PC", "palmitoyl", "palmitoyl"), "DOPC": ("PC", "oleoyl", "oleoyl"),
    "DLPC": ("PC", "lauroyl", "lauroyl"), "PLPC": ("PC", "palmitoyl", "linoleoyl"),
    "DPPE": ("PE", "palmitoyl", "palmitoyl"), "DOPE": ("PE", "oleoyl", "oleoyl"),
    "PLPE": ("PE", "palmitoyl", "linoleoyl"),
    "POPS": ("PS", "palmitoyl", "oleoyl"), "DPPS": ("PS", "palmitoyl", "palmitoyl"), "DOPS": ("PS", "oleoyl", "oleoyl"),
    "POPG": ("PG", "palmitoyl", "oleoyl"), "DPPG": ("PG", "palmitoyl", "palmitoyl"), "DOPG": ("PG", "oleoyl", "oleoyl"),
    "POPA": ("PA", "palmitoyl", "oleoyl"), "DPPA": ("PA", "palmitoyl", "palmitoyl"), "DOPA": ("PA", "oleoyl", "oleoyl"),
    # stearoyl-arachidonoyl (the M3 lipidome's SA tails), dilauroyl and palmitoyl-linoleoyl of every head
    "SAPC": ("PC", "stearoyl", "arachidonoyl"), "SAPE": ("PE", "stearoyl", "arachidonoyl"),
    "SAPS": ("PS", "stearoyl", "arachidonoyl"), "SAPG": ("PG", "stearoyl", "arachidonoyl"),
    "SAPA": ("PA", "stearoyl", "arachidonoyl"),
    "DLPE": ("PE", "lauroyl", "lauroyl"), "DLPS": ("PS", "lauroyl", "lauroyl"), "DLPG": ("PG", "lauroyl", "lauroyl"),
    "DLPA": ("PA", "lauroyl", "lauroyl"),
    "PLPS": ("PS", "palmitoyl", "linoleoyl"), "PLPG": ("PG", "palmitoyl", "linoleoyl"),
    "PLPA": ("PA", "palmitoyl", "linoleoyl"),
    # dilinoleoyl (the lipidome's DLPC/DLPS/DLPG/DLPA, M3 v1's DIPx) and palmitoyl-arachidonoyl of the
    # other heads; CHARMM36 templates spliced by scripts/build_lipid_templates.py
    "DIPC": ("PC", "linoleoyl", "linoleoyl"), "DIPS": ("PS", "linoleoyl", "linoleoyl"),
    "DIPG": ("PG", "linoleoyl", "linoleoyl"), "DIPA": ("PA", "linoleoyl", "linoleoyl"),
    "PAPE": ("PE", "palmitoyl", "arachidonoyl"), "PAPG": ("PG", "palmitoyl", "arachidonoyl"),
    "PAPA": ("PA", "palmitoyl", "arachidonoyl"),
}
#: sphingomyelins (d18:1 sphingosine, N-acyl chain; CHARMM36 names): SSM N-stearoyl, PSM N-palmitoyl
SPHINGOMYELINS = {"SSM": "stearoyl", "PSM": "palmitoyl"}
#: glycerophospholipids of the lipid model besides POPC (whose checks keep their own names)
GLYCEROPHOSPHOLIPIDS = tuple(n for n in LIPID_COMPOSITION if n != "POPC")
ARACHIDONOYL = tuple(n for n, (_, _, sn2) in LIPID_COMPOSITION.items() if sn2 == "arachidonoyl")


def lipids_with_head(head: str) -> tuple[str, ...]:
    """All-atom names of the glycerophospholipids with that head (PC, PE, PS, PG, PA, PIP2)."""
    return tuple(n for n, (h, _, _) in LIPID_COMPOSITION.items() if h == head)
#: CG residue names that CHARMM-GUI and Martini tools write for protonation variants, read as the
#: mapping set's variant (its hydrogens then follow the variant, not the pH)
CG_RESIDUE_ALIASES = {"GLUP": "GLH", "ASPP": "ASH", "LSN": "LYN",
                      # Martini 3 v1's names of dilinoleoyl PE/PS/PG/PA (the lipidome and mstool write DLPx)
                      "DIPE": "DLPE", "DIPS": "DLPS", "DIPG": "DLPG", "DIPA": "DLPA",
                      # the Martini 3 lipidome's names (Pedersen et al. 2025, M3-Lipid-Parameters) of
                      # lipids whose shipped mapping keeps the M3 v1 (2021) name; same beads
                      "PLPC": "PIPC", "PLPE": "PIPE", "PSM": "DPSM", "DUPC": "DLPC"}
#: CG names the M3 lipidome (2025) gives to other lipids than M3 v1 (2021) did: what to tell a user
#: whose residue of that name does not have the shipped (v1) mapping's beads
CG_NAME_CLASHES = {
    "PIPC": "in the Martini 3 lipidome (2025) PIPC is 16:0/20:2 PC, which no shipped model covers; "
            "the shipped PIPC is M3 v1's 16:0/18:2 PC (the lipidome's PLPC)",
    "PIPE": "in the Martini 3 lipidome (2025) PIPE is 16:0/20:2 PE, which no shipped model covers; "
            "the shipped PIPE is M3 v1's 16:0/18:2 PE (the lipidome's PLPE)",
}
#: CG names that M3 v1 (2021) and the lipidome (2025) give to two lipids both shipped: a residue whose
#: beads are not those of the name's mapping is read with the alternative whose beads it has.  DLPx is
#: dilauroyl in v1 (3 beads per tail; the lipidome's DUPx) and dilinoleoyl in the lipidome (4; v1's
#: DIPx); the shipped DLPC is v1's, the shipped DLPE/DLPS/DLPG/DLPA the lipidome's
CG_NAME_ALTERNATIVES = {"DLPC": ("DIPC",), "DLPE": ("DUPE",), "DLPS": ("DUPS",), "DLPG": ("DUPG",),
                        "DLPA": ("DUPA",)}
#: all-atom residue names read as the name of a shipped mapping
RESIDUE_ALIASES = {"CHL1": "CHL", "CHOL": "CHL", "DLIPE": "DLIP", "SAPI24": "SAP6",
                   # CHARMM-GUI's 5-character names of the spliced dilinoleoyl templates
                   "DLIPC": "DIPC", "DLIPS": "DIPS", "DLIPG": "DIPG", "DLIPA": "DIPA"}
#: the name the force field (CHARMM36) gives a mapping molecule.  The backmap writes it, so the heavy
#: atoms written without refinement carry the names of the refined output (CHARMM36 has two
#: cholesterol templates with the same atoms, CHL1 and CLOL: only the name tells them apart)
FORCEFIELD_NAMES = {"CHL": "CHL1"}


def standard_residue(name: str) -> str:
    """The standard residue of a protonation/force-field variant name (HSD -> HIS); others unchanged."""
    return VARIANT_STANDARD.get(name, name)


def forcefield_residue(name: str) -> str:
    """The force field's name of a residue name (CHL, CHOL -> CHL1); others unchanged."""
    return FORCEFIELD_NAMES.get(RESIDUE_ALIASES.get(name, name), name)


# --------------------------------------------------------------------------- backbone

BACKBONE = ("N", "CA", "C", "O")
#: atoms of an amino acid that are not its side chain
NOT_SIDE_CHAIN = frozenset(BACKBONE + ("OXT",))
#: Engh & Huber ideal backbone bond lengths (A) and angles (degrees); "+" marks an atom of residue i+1
BACKBONE_BONDS = {("N", "CA"): 1.458, ("CA", "C"): 1.525, ("C", "O"): 1.231, ("C", "+N"): 1.329}
BACKBONE_ANGLES = {("N", "CA", "C"): 111.2, ("CA", "C", "+N"): 116.2, ("C", "+N", "+CA"): 121.7,
                   ("CA", "C", "O"): 120.1, ("O", "C", "+N"): 122.7}
#: Engh & Huber angles at CA that hold CB (degrees)
CB_ANGLES = {("N", "CA", "CB"): 110.5, ("C", "CA", "CB"): 110.1}
#: the ideal CB of an L amino acid on N, CA, C (Engh & Huber geometry; ProteinMPNN's virtual CB):
#: ``CB = CA + k0 (b x c) + k1 b + k2 c`` with ``b = CA - N``, ``c = C - CA`` in Angstrom (k0 per A)
IDEAL_CB = (-0.58273431, 0.56802827, -0.54067466)

# --------------------------------------------------------------------------- bonds from distances
# Between atoms.  The fits' bead distances (reconstruction.protein_geometry.PEPTIDE_LINK_MAX,
# reconstruction.geometric_fit.DISULFIDE_BEADS) are a different fact and live with the fits.

#: A: a longer C(i)-N(i+1) is a chain break (as in the data manifest)
PEPTIDE_BOND_MAX = 2.0
#: A: SG-SG of a disulfide
DISULFIDE_MAX = 2.5

# --------------------------------------------------------------------------- soundness
# What the quality checks count as broken, and what the fit keeps stepping to avoid.

#: A: a bond this far from its ideal length is broken
BOND_OFF = 0.15
#: A: two heavy atoms further apart than 1-4 in the bond graph and closer than this clash
CLASH_DISTANCE = 2.2

# --------------------------------------------------------------------------- Martini solvent

#: Martini water beads (residue names); each stands for four waters
WATER_BEADS = ("W", "SW", "TW", "PW", "WF", "SOL")
WATERS_PER_BEAD = 4
#: Martini ion residues (in ``ION`` the bead name says which ion)
ION_BEADS = ("ION", "NA", "CL", "K", "CA2+", "NA+", "CL-")
#: CG residues the backmap does not backmap (the pipeline rebuilds solvent with ``--solvent explicit``)
SOLVENT_RESIDUES = frozenset(WATER_BEADS + ION_BEADS)

# --------------------------------------------------------------------------- stereochemistry

# Chirality checks: name -> (resnames, centre, a, b, c, expected_sign), where the
# signed volume is  dot(a - centre, cross(b - centre, c - centre))  (geometry.signed_volume).
# The signs were determined empirically: over 24 chains of proteins/train (every
# 60th file) all 6533 CA centres, 425 ILE CB and 360 THR CB had a POSITIVE volume
# with zero exceptions.  That is L-amino acids, L-Ile (2S,3S) and L-Thr (2S,3R).
# Lipid centres (CHARMM36 names): the signs of every POPC glycerol C2 (100, sn-2 = R) and
# of the eight cholesterol centres (24 molecules: 3S,8S,9S,10R,13R,14S,17R,20R) of the
# NMRLipids CHARMM36 POPC/cholesterol bilayer, zero exceptions.  The other lipids' signs are
# those of molecules built from SMILES with explicit stereo whose RDKit CIP labels are the
# literature's (scripts/build_lipid_conformers.py): their glycerol C2 has POPC's sign.
_L_AMINO = tuple(sorted(AMINO_ACIDS - {"GLY"}))
#: sign of the PG head's glycerol C12 (2'S) volume (OC2, C11, C13): that of the molecules built from
#: SMILES with the S label (scripts/build_lipid_conformers.py checks it); mstool's CHARMM36 chirality
#: table (mapping/martini.lipid.c36.dat, POPG: "H12A C12 OC2 C13 C11", the same improper as its
#: glycerol "HS C2 O21 C1 C3") gives the same configuration
PG_GLYCEROL_SIGN = +1
CHIRALITY_CHECKS: dict[str, tuple[tuple[str, ...], str, str, str, str, int]] = {
    "ca": (_L_AMINO, "CA", "N", "C", "CB", +1),
    "ile_cb": (("ILE",), "CB", "CA", "CG1", "CG2", +1),
    "thr_cb": (("THR",), "CB", "CA", "OG1", "CG2", +1),
    "popc_c2": (("POPC",), "C2", "O21", "C1", "C3", -1),
    "chol_c3": (CHOLESTEROL, "C3", "O3", "C2", "C4", -1),
    "chol_c8": (CHOLESTEROL, "C8", "C7", "C9", "C14", +1),
    "chol_c9": (CHOLESTEROL, "C9", "C8", "C10", "C11", -1),
    "chol_c10": (CHOLESTEROL, "C10", "C1", "C5", "C19", +1),
    "chol_c13": (CHOLESTEROL, "C13", "C12", "C17", "C18", -1),
    "chol_c14": (CHOLESTEROL, "C14", "C8", "C13", "C15", -1),
    "chol_c17": (CHOLESTEROL, "C17", "C13", "C16", "C20", +1),
    "chol_c20": (CHOLESTEROL, "C20", "C17", "C21", "C22", +1),
    # the other glycerophospholipids of the lipid model: the same sn-2 R centre and sign as POPC
    "glycerol_c2": (GLYCEROPHOSPHOLIPIDS, "C2", "O21", "C1", "C3", -1),
    "ps_serine_c12": (lipids_with_head("PS"), "C12", "N", "C11", "C13", -1),  # L-serine (S)
    # PG head: glycerol C2' of the natural 1'-sn-glycerol (S; CHARMM36 C12, OH on OC2, C11 on the phosphate)
    "pg_glycerol_c12": (lipids_with_head("PG"), "C12", "OC2", "C11", "C13", PG_GLYCEROL_SIGN),
    "ssm_c2s": (tuple(SPHINGOMYELINS), "C2S", "NF", "C1S", "C3S", -1),  # D-erythro sphingosine 2S
    "ssm_c3s": (tuple(SPHINGOMYELINS), "C3S", "O3", "C2S", "C4S", -1),  # 3R
    # 1D-myo-inositol 4,5-bisphosphate, C1 bonded to the phosphodiester O12 (1R,2R,3S,4R,5R,6S)
    "pip2_c11": (("SAP6",), "C11", "O12", "C12", "C16", +1),
    "pip2_c12": (("SAP6",), "C12", "O2", "C11", "C13", -1),
    "pip2_c13": (("SAP6",), "C13", "O3", "C12", "C14", -1),
    "pip2_c14": (("SAP6",), "C14", "O4", "C13", "C15", +1),
    "pip2_c15": (("SAP6",), "C15", "O5", "C14", "C16", -1),
    "pip2_c16": (("SAP6",), "C16", "O6", "C15", "C11", +1),
}
#: the amino-acid centres of :data:`CHIRALITY_CHECKS` (the rest are lipid centres)
PROTEIN_CENTRES = ("ca", "ile_cb", "thr_cb")
#: the lipid (non-amino-acid) centres of :data:`CHIRALITY_CHECKS`
MOLECULE_CENTRES = {k: v for k, v in CHIRALITY_CHECKS.items() if k not in PROTEIN_CENTRES}
#: nm^3 (0.8 A^3): a stereo centre with a smaller signed volume is (nearly) flat: repairs place
#: it out of the plane instead of reflecting it
FLAT_CENTRE_NM3 = 0.8e-3


def _chain_double_bonds() -> dict:
    """The cis double bonds of the acyl chains of LIPID_COMPOSITION (POPC's own check aside)."""
    out: dict = {}
    for resname, (_, *chains) in LIPID_COMPOSITION.items():
        if resname == "POPC":
            continue
        for prefix, sn, chain in (("C3", "sn1", chains[0]), ("C2", "sn2", chains[1])):
            for k in ACYL_CHAINS[chain][1]:
                key = f"arachidonoyl_c{k}" if (chain, sn) == ("arachidonoyl", "sn2") else f"{chain}_{sn}_c{k}"
                atoms = tuple(f"{prefix}{i}" for i in range(k - 1, k + 3))
                names = out[key][0] if key in out else ()
                out[key] = (names + (resname,), atoms, "cis")
    return out


# Double bonds whose geometry is fixed: name -> (resnames, four atoms of the dihedral, "cis"|"trans").
DOUBLE_BOND_CHECKS: dict[str, tuple[tuple[str, ...], tuple[str, str, str, str], str]] = {
    "popc_oleoyl_c9": (("POPC",), ("C28", "C29", "C210", "C211"), "cis"),
    "chol_c5": (CHOLESTEROL, ("C10", "C5", "C6", "C7"), "cis"),  # C5=C6 inside ring B
    # every cis bond of every other glycerophospholipid's chains (ACYL_CHAINS): "{chain}_{sn}_c{k}";
    # the sn-2 arachidonoyl bonds are "arachidonoyl_c{k}"
    **_chain_double_bonds(),
    "ssm_sphingosine_c4": (tuple(SPHINGOMYELINS), ("C3S", "C4S", "C5S", "C6S"), "trans"),  # 4E
    "ssm_amide": (tuple(SPHINGOMYELINS), ("C2S", "NF", "C1F", "C2F"), "trans"),
}

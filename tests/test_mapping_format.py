"""The mapping YAML format (docs/mapping-format.md): shipped sets, parsing, validation,
hierarchy auto-assignment and the vermouth ``.map`` import.

Bad files are derived from the shipped PHE/ALA mappings by breaking one line, so every
error test starts from a file that is known to load.
"""

from __future__ import annotations

import os
from collections import deque
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import yaml

from openmm_herobm.errors import MappingError
from openmm_herobm.mapping import MappingSet, load_molecule_mapping, parse_molecule_mapping
from openmm_herobm.mapping.hierarchy import bonds_from_structure, complete_hierarchy, strip_hierarchy, template_bonds
from openmm_herobm.mapping.masses import element_mass
from openmm_herobm.mapping.molecule import validate
from openmm_herobm.mapping import import_vermouth_map, read_vermouth_map
from openmm_herobm.resources import mappings_dir

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HEROBM_SHARED_DATA", REPO.parent / "shared" / "data"))
MAPS = DATA / "reference_mappings" / "vermouth_martini3001"
needs_data = pytest.mark.skipif(not MAPS.is_dir(), reason=f"shared data not found at {DATA}")

STANDARD = ["ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE",
            "LEU", "LYS", "MET", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL"]
VARIANTS = ["HID", "HIE", "HIP", "HSD", "HSE", "HSP", "CYX", "CYM", "ASH", "GLH", "LYN"]
CAPS = ["ACE", "NME"]
# Martini 3 (martini3001) bead names per residue, as martinize2 writes them
M3_BEADS = {"ALA": 2, "ARG": 3, "ASN": 2, "ASP": 2, "CYS": 2, "GLN": 2, "GLU": 2, "GLY": 1, "HIS": 4,
            "ILE": 2, "LEU": 2, "LYS": 3, "MET": 2, "PHE": 4, "PRO": 2, "SER": 2, "THR": 2, "TRP": 6,
            "TYR": 5, "VAL": 2, "HID": 4, "HIE": 4, "HIP": 4, "HSD": 4, "HSE": 4, "HSP": 4, "CYX": 2,
            "CYM": 2, "ASH": 2, "GLH": 2, "LYN": 3, "ACE": 1, "NME": 1}


@pytest.fixture(scope="module")
def martini3():
    return MappingSet.load("martini3")


@pytest.fixture(scope="module")
def ca_set():
    return MappingSet.load("ca")


def shipped_text(name: str, set_name: str = "martini3") -> str:
    return (mappings_dir() / set_name / f"{name}.yaml").read_text()


# --------------------------------------------------------------------- shipped sets
def test_shipped_sets_load(martini3, ca_set):
    assert {m.name for m in martini3.molecules} == set(STANDARD + VARIANTS + CAPS)
    # the CA set holds the same residues minus the caps (they have no CA)
    assert {m.name for m in ca_set.molecules} == set(STANDARD + VARIANTS)
    assert martini3.files_hash and martini3.files_hash != ca_set.files_hash
    # a folder path loads too, and gives the same hash as the shipped name
    assert MappingSet.load(mappings_dir() / "martini3").files_hash == martini3.files_hash
    with pytest.raises(MappingError, match="neither a folder nor a shipped set"):
        MappingSet.load("no_such_set")


@pytest.mark.parametrize("resname", STANDARD + VARIANTS + CAPS)
def test_required_residue_in_martini3(martini3, ca_set, resname):
    m = martini3.for_residue(resname)
    assert m is not None and m.name == resname and m.cg_residue_name == resname
    assert martini3.for_cg_residue(resname) is m
    expected = ["BB"] + [f"SC{k}" for k in range(1, M3_BEADS[resname])]
    assert m.beads == expected
    # every heavy atom of OpenMM's residue template is in the mapping (by name or alias)
    names = {n for a in m.atoms for n in a.names}
    template = template_bonds(resname)
    assert template is not None
    heavy = {n for pair in template for n in pair if not n.startswith("H")}
    assert heavy <= names, f"{resname}: template atoms {sorted(heavy - names)} are not mapped"
    # the CA set has the residue too (caps excepted: they have no CA)
    assert (ca_set.for_residue(resname) is not None) == (resname not in CAPS)


def test_ca_set_bead_sits_on_ca(ca_set):
    for m in ca_set.molecules:
        assert m.beads == ["BB"]
        cm = [a.name for a in m.atoms if a.is_cm]
        assert cm == ["CA"], m.name
        w = m.bead_weights()
        assert w[0, m.atom_index("CA")] == 1.0 and w.sum() == 1.0


def test_hydrogens_and_bang_atoms_carry_no_weight(martini3):
    for m in martini3.molecules:
        w = m.bead_weights()
        for i, atom in enumerate(m.atoms):
            if atom.is_hydrogen or all(mm.weight == 0 for mm in atom.memberships):
                assert not w[:, i].any(), (m.name, atom.name)
            else:
                # mass x share
                for mm in atom.memberships:
                    assert w[m.beads.index(mm.bead), i] == pytest.approx(element_mass(atom.element) * mm.weight)
    phe = martini3.for_residue("PHE")
    # PHE HB3 has no '!' in the file, yet carries no weight (hydrogens never do)
    hb3 = phe.atoms[phe.atom_index("HB3")]
    assert hb3.memberships[0].weight == 1.0 and not phe.bead_weights()[:, phe.atom_index("HB3")].any()


# ---------------------------------------------------------------------- round trip
def _same_mapping(a, b):
    assert a.name == b.name and a.beads == b.beads and a.cg_name == b.cg_name
    assert a.residue_names == b.residue_names and a.weighting == b.weighting and a.bonds == b.bonds
    assert len(a.atoms) == len(b.atoms)
    for x, y in zip(a.atoms, b.atoms):
        assert (x.name, x.aliases, x.element, x.is_cm, x.optional) == (y.name, y.aliases, y.element, y.is_cm, y.optional)
        assert len(x.memberships) == len(y.memberships)
        for p, q in zip(x.memberships, y.memberships):
            assert (p.bead, p.level, p.anchor_id, p.own_id) == (q.bead, q.level, q.anchor_id, q.own_id), (a.name, x.name)
            assert p.weight == pytest.approx(q.weight, abs=1e-12), (a.name, x.name)
    for bead in a.beads:
        assert a.slots(bead) == b.slots(bead)


@pytest.mark.parametrize("set_name", ["martini3", "ca"])
def test_round_trip_shipped(set_name):
    for m in MappingSet.load(set_name).molecules:
        again = parse_molecule_mapping(yaml.safe_load(m.to_yaml()), source=m.source)
        _same_mapping(m, again)
        assert again.to_yaml() == m.to_yaml()


def test_round_trip_all_features():
    """Level 0, explicit weights, '!', CM, '?', '-' placeholders, cg_name, residue_names, bonds."""
    text = """
molecule: LIG
cg_name: LG
residue_names: [LG1, LG2]
weighting: geometric
beads: [B1, B2]
atoms:
  C1,CA1:  B1     P0A
  C2:      B1,B2  P2AA,P1A  1/4,3/4
  O3:      B2     P2AB  CM
  C4:      B2,B1  -,P2AB  !
  N5:      B2     ?
  H1:      B1
bonds:
  - [C1, C2]
  - [C2, O3]
  - [C2, C4]
"""
    m = parse_molecule_mapping(yaml.safe_load(text), "lig.yaml")
    assert m.atoms[0].memberships[0].level == 0
    assert [mm.weight for mm in m.atoms[1].memberships] == [0.25, 0.75]
    assert m.atoms[3].memberships[0].level is None and m.atoms[3].memberships[1].level == 2
    assert [mm.weight for mm in m.atoms[3].memberships] == [0.0, 0.0]
    again = parse_molecule_mapping(yaml.safe_load(m.to_yaml()), "lig.yaml")
    _same_mapping(m, again)
    # geometric weighting: every weighted heavy atom counts 1 (times its share)
    w = m.bead_weights()
    assert w[0].tolist() == [1.0, 0.25, 0.0, 0.0, 0.0, 0.0]
    assert w[1].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0, 0.0]  # CM: all weight on O3


def test_round_trip_keeps_elements():
    text = "molecule: LIG\natoms:\n  C1: B1 P1A\n  CL1: B1 P2AA\nelements: {CL1: Cl}\n"
    m = parse_molecule_mapping(yaml.safe_load(text), "lig.yaml")
    assert m.atoms[1].element == "Cl"
    again = parse_molecule_mapping(yaml.safe_load(m.to_yaml()), "lig.yaml")
    assert again.atoms[1].element == "Cl"


def test_slot_weights_renormalised_over_reconstructing_beads(martini3):
    phe = martini3.for_residue("PHE")
    cd1, cz, cd2 = (phe.atom_index(n) for n in ("CD1", "CZ", "CD2"))
    weight = {(b, s.atom): s.weight for b in phe.beads for s in phe.slots(b)}
    assert weight[("SC1", cd1)] == pytest.approx(1 / 3) and weight[("SC2", cd1)] == pytest.approx(2 / 3)
    assert weight[("SC2", cz)] == pytest.approx(1 / 2) and weight[("SC3", cz)] == pytest.approx(1 / 2)
    assert weight[("SC3", cd2)] == pytest.approx(2 / 3) and weight[("SC1", cd2)] == pytest.approx(1 / 3)
    # '!' on a shared atom: all shares are zero, so each reconstructing bead counts equally
    text = "molecule: X\natoms:\n  C1: A P1A\n  C2: B P1A\n  C3: A,B P2AB,P2AB !\n"
    m = parse_molecule_mapping(yaml.safe_load(text))
    assert [s.weight for s in m.slots("A")] == [1.0, 0.5] and [s.weight for s in m.slots("B")] == [1.0, 0.5]
    # a bead that does not reconstruct a shared atom ('-') leaves the whole weight to the other
    text = "molecule: X\natoms:\n  C1: A P1A\n  C2: B P1A\n  C3: A,B -,P2AB 1/3,2/3\n"
    m = parse_molecule_mapping(yaml.safe_load(text))
    assert [s.weight for s in m.slots("B")] == [1.0, 1.0] and len(m.slots("A")) == 1


# ----------------------------------------------------------------- validation errors
def _write(tmp_path, text, name="PHE.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def _replace_line(text, startswith, new):
    lines = text.splitlines()
    hits = [i for i, line in enumerate(lines) if line.strip().startswith(startswith)]
    assert len(hits) == 1, (startswith, hits)
    lines[hits[0]] = new
    return "\n".join(lines) + "\n"


def _expect_error(tmp_path, text, *culprits, name="PHE.yaml", molecule="PHE", match=None):
    path = _write(tmp_path, text, name)
    with pytest.raises(MappingError, match=match) as info:
        load_molecule_mapping(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    assert f"molecule {molecule}" in msg, msg
    for c in culprits:
        assert c in msg, (c, msg)
    return msg


def test_shipped_phe_file_loads(tmp_path):
    # the base of every broken file below loads cleanly from tmp_path
    m = load_molecule_mapping(_write(tmp_path, shipped_text("PHE")))
    assert m.source == str(tmp_path / "PHE.yaml") and m.beads == ["BB", "SC1", "SC2", "SC3"]


def test_error_unknown_bead(tmp_path):
    text = _replace_line(shipped_text("PHE"), "CE1:", "  CE1: SC9 P1A")
    _expect_error(tmp_path, text, "atom CE1", "SC9", match="unknown bead")


def test_error_bead_without_atoms(tmp_path):
    text = shipped_text("PHE").replace("beads: [BB, SC1, SC2, SC3]", "beads: [BB, SC1, SC2, SC3, SC4]")
    _expect_error(tmp_path, text, "SC4", match="has no atoms")


def test_error_anchor_not_defined_at_previous_level(tmp_path):
    # O is anchored on level-2 id B of BB (C); there is no level-2 id C
    text = _replace_line(shipped_text("PHE"), "O,O1", "  O,O1,OT1,OCT1,OC1: BB P3CA")
    _expect_error(tmp_path, text, "atom O", "anchor C", "level 2", "bead BB", match="not defined")


def test_error_anchor_at_wrong_level(tmp_path):
    # id B exists at level 2 (C), but a level-2 atom must anchor on a level-1 id
    text = _replace_line(shipped_text("PHE"), "N:", "  N: BB P2BA")
    _expect_error(tmp_path, text, "atom N", "anchor B", "level 1", match="not defined")


def test_error_duplicate_atom_name(tmp_path):
    text = shipped_text("PHE").replace("  CE2:", "  CB,CX: SC3\n  CE2:")
    _expect_error(tmp_path, text, "atom CB", match="duplicate atom name")


def test_error_duplicate_atom_key(tmp_path):
    """A literally repeated key is refused (plain yaml.safe_load would keep the last)."""
    path = tmp_path / "PHE.yaml"
    path.write_text(shipped_text("PHE").replace("  CE2:", "  CB: SC3\n  CE2:"))
    with pytest.raises(MappingError, match="line 21 .*duplicate key 'CB'"):
        load_molecule_mapping(path)


def test_error_alias_repeated_within_atom(tmp_path):
    # an alias may equal ANOTHER atom's name (naming conventions swap HB2/HB3), but not its own
    text = _replace_line(shipped_text("PHE"), "CE2:", "  CE2,CE2: SC3 P1A")
    _expect_error(tmp_path, text, "atom CE2", match="repeated")


def test_error_duplicate_id(tmp_path):
    # C takes id A at level 2 of BB, which N already has
    text = _replace_line(shipped_text("PHE"), "C:", "  C: BB P2AA")
    _expect_error(tmp_path, text, "atom C", "atom N", "id A", "level 2", "bead BB", match="already used")


def test_error_duplicate_id_level0_and_level1(tmp_path):
    # level 0 and level 1 share the same id space (both sit on the bead)
    text = _replace_line(shipped_text("PHE"), "CB:", "  CB: SC1 P0A")
    _expect_error(tmp_path, text, "atom CB", "atom CG", "id A", match="already used")


def test_error_weights_not_summing_to_one(tmp_path):
    text = _replace_line(shipped_text("PHE"), "CD1:", "  CD1: SC1,SC2 P2AB,P2AA 1/3,1/3")
    _expect_error(tmp_path, text, "atom CD1", "1/3,1/3", match="sum to 0.6667, not 1")


def test_error_weight_count(tmp_path):
    text = _replace_line(shipped_text("PHE"), "CD1:", "  CD1: SC1,SC2 P2AB,P2AA 1")
    _expect_error(tmp_path, text, "atom CD1", match="weight")


@pytest.mark.parametrize("token", ["1.5/3,1/2", "1/0,1"])
def test_error_malformed_weight(tmp_path, token):
    text = _replace_line(shipped_text("PHE"), "CD1:", f"  CD1: SC1,SC2 P2AB,P2AA {token}")
    _expect_error(tmp_path, text, "atom CD1")


def test_error_bead_without_reconstructed_atom(tmp_path):
    text = shipped_text("PHE")
    text = _replace_line(text, "CZ:", "  CZ: SC3,SC2 -,P2AB")
    text = _replace_line(text, "CD2:", "  CD2: SC3,SC1 -,P2AC 2/3,1/3")
    text = _replace_line(text, "CE2:", "  CE2: SC3")
    _expect_error(tmp_path, text, "bead SC3", match="no reconstructed atom")
    # the same file is fine as input of `herobm mapping complete`
    m = load_molecule_mapping(tmp_path / "PHE.yaml", require_hierarchy=False)
    assert not any(mm.reconstructed for a in m.atoms for mm in a.memberships if mm.bead == "SC3")


def test_error_bead_without_weighted_heavy_atom(tmp_path):
    # SC3's heavy atoms all get '!'; its hydrogens HZ, HD2, HE2 still list SC3 with a share,
    # but hydrogens never carry weight, so the bead has no position
    text = shipped_text("PHE")
    text = _replace_line(text, "CZ:", "  CZ: SC3,SC2 P2AA,P2AB !")
    text = _replace_line(text, "CD2:", "  CD2: SC3,SC1 P2AB,P2AC !")
    text = _replace_line(text, "CE2:", "  CE2: SC3 P1A !")
    _expect_error(tmp_path, text, "bead SC3", match="no heavy atom carrying weight")


@pytest.mark.parametrize("line, culprit, match", [
    ("  CA: BB P1A XX", "'XX'", "cannot understand token"),
    ("  CA: BB P1AB", "'P1AB'", "takes one id"),
    ("  CA: BB PXA", "'PXA'", "bad hierarchy token"),
    ("  CA: BB P10A", "'P10A'", "needs an anchor id"),
    ("  CA: BB P1A,P1B", "'P1A,P1B'", "hierarchy token"),
    ("  CA: BB,BB P1A,P1B", "'BB,BB'", "bead listed twice"),
    ("  CA: BB,", "'BB,'", "empty bead name"),
])
def test_error_bad_tokens(tmp_path, line, culprit, match):
    text = _replace_line(shipped_text("PHE"), "CA:", line)
    _expect_error(tmp_path, text, "atom CA", culprit, match=match)


def test_error_level2_needs_two_ids(tmp_path):
    text = _replace_line(shipped_text("PHE"), "N:", "  N: BB P2A")
    _expect_error(tmp_path, text, "atom N", "'P2A'", match="needs an anchor id and an own id")


def test_error_two_cm_atoms_in_one_bead(tmp_path):
    text = _replace_line(shipped_text("PHE", "ca"), "N:", "  N: BB P2AA CM")
    _expect_error(tmp_path, text, "atom CA", "atom N", "bead BB", match="one CM per bead")


def test_error_other_file_level_problems(tmp_path):
    base = shipped_text("PHE")
    _expect_error(tmp_path, base + "colour: red\n", "colour", match="unknown key")
    _expect_error(tmp_path, base + "weighting: volume\n", "volume", match="weighting")
    _expect_error(tmp_path, base + "bonds:\n  - [CA, CX]\n", "CX", match="bond")
    path = _write(tmp_path, base.replace("atoms:", "atoms: [", 1))
    with pytest.raises(MappingError, match="not valid YAML") as info:
        load_molecule_mapping(path)
    assert str(path) in str(info.value)
    with pytest.raises(MappingError, match="cannot read"):
        load_molecule_mapping(tmp_path / "missing.yaml")


@pytest.mark.parametrize("extra, culprits, match", [
    ("elements: true", ["'elements:'"], "must map atom names"),
    ("elements: {CA: Qq}", ["atom CA", "'Qq'"], "not an element symbol"),
    ("elements: {CZ: Se, CA: U}", ["atom CA", "'U'"], "no mass known"),
    ("beads: BB", ["'beads:'"], "must be a list"),
    ("bonds: 3", ["'bonds:'"], "must be a list of atom pairs"),
    ("bonds:\n  - {CA: CB}", ["a mapping"], "must be a name"),
    ("residue_names: PHX", ["'residue_names:'"], "must be a list"),
    ("cg_name: [A, B]", ["'cg_name:'", "a list"], "must be a name"),
    ("weighting: no", ["'weighting:'", "False"], "quote"),
])
def test_error_wrong_yaml_types(tmp_path, extra, culprits, match):
    """A value of the wrong YAML type is refused naming the key, not turned into a name by str()."""
    lines = [line for line in shipped_text("PHE").splitlines() if not line.startswith(extra.split(":")[0] + ":")]
    _expect_error(tmp_path, "\n".join(lines) + "\n" + extra + "\n", *culprits, match=match)


def test_error_wrong_yaml_types_in_atoms(tmp_path):
    base = shipped_text("PHE")
    _expect_error(tmp_path, _replace_line(base, "CZ:", "  CZ:"), "atom CZ", match="no bead given")
    _expect_error(tmp_path, _replace_line(base, "CZ:", "  CZ: [SC2, SC3]"), "atom CZ", "a list", match="must be a name")
    path = _write(tmp_path, base.replace("molecule: PHE", "molecule: yes"))
    with pytest.raises(MappingError, match="'molecule:' True is a YAML boolean; quote the name"):
        load_molecule_mapping(path)
    # an alias bomb: 2**40 leaves if turned into text; refused by its type at once
    bomb = "".join(f"  C{i}: &b{i} [*b{i - 1}, *b{i - 1}]\n" for i in range(1, 40))
    path = _write(tmp_path, "molecule: PHE\natoms:\n  CA: &b0 [BB, BB]\n" + bomb)
    with pytest.raises(MappingError, match="atom CA: the bead specification must be a name, not a list"):
        load_molecule_mapping(path)


def test_error_not_yaml_text(tmp_path):
    path = tmp_path / "PHE.yaml"
    path.write_bytes(b"molecule: PHE\natoms:\n  CA: BB P1A\xff\n")
    with pytest.raises(MappingError, match="not UTF-8 text"):
        load_molecule_mapping(path)
    for depth in (3000, 200_000):  # libyaml's composer (the fast path) would crash on the deeper one
        path.write_text("atoms: " + "[" * depth + "]" * depth + "\n")
        with pytest.raises(MappingError, match="nested too deeply"):
            load_molecule_mapping(path)
    path.write_text("molecule: X\natoms:\n" + "".join(" " * (2 * k) + f"a{k}:\n" for k in range(3000)))
    with pytest.raises(MappingError, match="nested too deeply"):
        load_molecule_mapping(path)
    path.write_text("\x00molecule: PHE\n")
    with pytest.raises(MappingError, match="not valid YAML") as info:
        load_molecule_mapping(path)
    assert "\n" not in str(info.value)


def test_yaml_tags_never_run_code(tmp_path):
    marker = tmp_path / "ran"
    text = f"molecule: !!python/object/apply:os.system ['touch {marker}']\natoms:\n  CA: BB P1A\n"
    with pytest.raises(MappingError, match="not valid YAML"):
        load_molecule_mapping(_write(tmp_path, text))
    with pytest.raises(MappingError, match="not valid YAML"):
        MappingSet.load(tmp_path)
    assert not marker.exists()


def test_error_in_set_names_the_file(tmp_path):
    for name in ("ALA", "GLY"):
        _write(tmp_path, shipped_text(name), f"{name}.yaml")
    _write(tmp_path, _replace_line(shipped_text("GLY"), "C:", "  C: BB P2AA").replace("GLY", "GLX"), "GLX.yaml")
    with pytest.raises(MappingError) as info:
        MappingSet.load(tmp_path)
    assert "GLX.yaml" in str(info.value) and "molecule GLX" in str(info.value) and "atom C" in str(info.value)
    # two files for the same residue name
    (tmp_path / "GLX.yaml").write_text(shipped_text("GLY"))
    with pytest.raises(MappingError, match="residue name GLY is already mapped"):
        MappingSet.load(tmp_path)


# -------------------------------------------------------------- hierarchy completion
def _check_hierarchy(done, bonds):
    neighbours = {}
    for a, b in bonds:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    by_id = {}
    for atom in done.atoms:
        for m in atom.memberships:
            if m.reconstructed:
                by_id[(m.bead, max(m.level, 1), m.own_id)] = atom.name
    for atom in done.atoms:
        if not atom.is_hydrogen and not atom.optional:
            assert atom.reconstructed, (done.name, atom.name)
            # reconstructed from every bead it belongs to
            assert all(m.reconstructed for m in atom.memberships), (done.name, atom.name)
        if atom.is_hydrogen or atom.optional:
            assert not atom.reconstructed, (done.name, atom.name)
        for m in atom.memberships:
            if m.reconstructed and m.level >= 2:
                anchor = by_id[(m.bead, m.level - 1, m.anchor_id)]
                assert anchor in neighbours.get(atom.name, ()), (done.name, atom.name, anchor)
    # level = 1 + bond distance from the bead's root, inside the bead (breadth-first)
    for bead in done.beads:
        members = {a.name: m.level for a in done.atoms for m in a.memberships if m.bead == bead and m.reconstructed}
        roots = [n for n, lvl in members.items() if lvl == 1]
        assert roots, (done.name, bead)
        dist = {r: 1 for r in roots}
        queue = deque(roots)
        while queue:
            n = queue.popleft()
            for nb in neighbours.get(n, ()):
                if nb in members and nb not in dist:
                    dist[nb] = dist[n] + 1
                    queue.append(nb)
        assert dist == members, (done.name, bead, dist, members)


@pytest.mark.parametrize("set_name", ["martini3", "ca"])
def test_complete_hierarchy_on_shipped(set_name):
    for m in MappingSet.load(set_name).molecules:
        stripped = strip_hierarchy(m)
        assert not any(a.reconstructed for a in stripped.atoms)
        with pytest.raises(MappingError, match="no reconstructed atom"):
            validate(stripped)
        done = complete_hierarchy(stripped)
        _check_hierarchy(done, template_bonds(m.name))
        # the weights are untouched
        np.testing.assert_array_equal(done.bead_weights(), m.bead_weights())


def test_complete_hierarchy_roots(martini3, ca_set):
    phe = complete_hierarchy(strip_hierarchy(martini3.for_residue("PHE")))
    level = {(a.name, m.bead): m.level for a in phe.atoms for m in a.memberships}
    # BB: CA is the most central of N, CA, C, O; O hangs on C
    assert level[("CA", "BB")] == 1 and level[("N", "BB")] == 2 and level[("C", "BB")] == 2
    assert level[("O", "BB")] == 3
    # SC1 (CB, CG, CD1, CD2): CG is bonded to the three others
    assert level[("CG", "SC1")] == 1 and {level[(n, "SC1")] for n in ("CB", "CD1", "CD2")} == {2}
    # OXT (optional) and hydrogens get no token
    assert level[("OXT", "BB")] is None and level[("HB3", "SC1")] is None
    # CA set: the CM atom is the root, although CB is more central in a long side chain
    lys = complete_hierarchy(strip_hierarchy(ca_set.for_residue("LYS")))
    roots = [a.name for a in lys.atoms for m in a.memberships if m.level == 1]
    assert roots == ["CA"]
    nz = lys.atoms[lys.atom_index("NZ")].memberships[0]
    assert nz.level == 6  # CA-CB-CG-CD-CE-NZ


def test_complete_hierarchy_bond_sources(tmp_path, martini3):
    import mdtraj

    # 1. a structure: bonds by distance from a real PHE residue equal the template's heavy-atom bonds
    chain = DATA / "proteins" / "test" / "bm5_1CGI_l_u_B.pdb.gz"
    if not chain.is_file():
        pytest.skip(f"{chain} not found")
    traj = mdtraj.load(str(chain), standard_names=False)
    res = next(r for r in traj.topology.residues if r.name == "PHE")
    atoms = [(a.name, a.element.symbol, traj.xyz[0, a.index]) for a in res.atoms]
    from_structure = {frozenset(b) for b in bonds_from_structure(atoms)}
    template = {frozenset(b) for b in template_bonds("PHE") if not any(n.startswith("H") or n == "OXT" for n in b)}
    assert from_structure == template
    stripped = strip_hierarchy(martini3.for_residue("PHE"))
    via_structure = complete_hierarchy(stripped, [tuple(b) for b in from_structure])
    assert via_structure.to_yaml() == complete_hierarchy(stripped).to_yaml()

    # 2. a 'bonds:' list in the file (a ligand that has no OpenMM template)
    text = ("molecule: TOL\natoms:\n  C1: R1\n  C2: R1,R2\n  C3: R2\n  C4: R2,R3\n  C5: R3\n  C6: R3,R1\n"
            "  C7: R1\n  H1: R2\nbonds:\n  - [C1, C2]\n  - [C2, C3]\n  - [C3, C4]\n  - [C4, C5]\n"
            "  - [C5, C6]\n  - [C6, C1]\n  - [C1, C7]\n  - [C3, H1]\n")
    lig = load_molecule_mapping(_write(tmp_path, text, "TOL.yaml"), require_hierarchy=False)
    done = complete_hierarchy(lig)
    _check_hierarchy(done, lig.bonds)
    level = {(a.name, m.bead): m.level for a in done.atoms for m in a.memberships}
    assert level[("C1", "R1")] == 1 and level[("H1", "R2")] is None
    assert {level[(n, "R1")] for n in ("C2", "C6", "C7")} == {2}

    # 3. no bonds known at all: a clear error
    no_bonds = text.split("bonds:")[0]
    lig = load_molecule_mapping(_write(tmp_path, no_bonds, "TOL.yaml"), require_hierarchy=False)
    with pytest.raises(MappingError, match="no bond graph known") as info:
        complete_hierarchy(lig)
    assert "molecule TOL" in str(info.value)


# ------------------------------------------------------------------- vermouth import
@needs_data
def test_read_vermouth_map_weights():
    phe = read_vermouth_map(MAPS / "phe.charmm36.map")
    assert phe.name == "PHE" and phe.beads == ["BB", "SC1", "SC2", "SC3"]
    atom = {a.name: a for a in phe.atoms}
    # "CD1 SC1 SC2 SC2": one share for SC1, two for SC2
    assert [(m.bead, Fraction(m.weight).limit_denominator(100)) for m in atom["CD1"].memberships] == \
        [("SC1", Fraction(1, 3)), ("SC2", Fraction(2, 3))]
    # "CD2 SC3 SC3 SC1"
    assert [(m.bead, Fraction(m.weight).limit_denominator(100)) for m in atom["CD2"].memberships] == \
        [("SC3", Fraction(2, 3)), ("SC1", Fraction(1, 3))]
    # "CZ SC3 SC2": equal shares
    assert [(m.bead, m.weight) for m in atom["CZ"].memberships] == [("SC3", 0.5), ("SC2", 0.5)]
    # "HA !BB": member of BB with zero weight
    assert [(m.bead, m.weight) for m in atom["HA"].memberships] == [("BB", 0.0)]
    assert not any(m.reconstructed for a in phe.atoms for m in a.memberships)
    assert "HA:" in phe.to_yaml() and "!" in [ln for ln in phe.to_yaml().splitlines() if "HA:" in ln][0]


@needs_data
def test_bang_gives_zero_weight_to_heavy_atom(tmp_path):
    # derived from the real ALA map: mark CB '!SC1' -> SC1 has no weighted heavy atom
    text = (MAPS / "ala.charmm36.map").read_text()
    lines = text.splitlines()
    k = next(i for i, ln in enumerate(lines) if ln.split()[1:2] == ["CB"])
    lines[k] = lines[k].replace("SC1", "!SC1")
    (tmp_path / "ala.map").write_text("\n".join(lines) + "\n")
    with pytest.raises(MappingError, match="bead SC1 has no heavy atom carrying weight"):
        read_vermouth_map(tmp_path / "ala.map")


@needs_data
@pytest.mark.parametrize("resname, stem", [("PHE", "phe.charmm36"), ("TRP", "trp.charmm36"),
                                           ("HIS", "his.charmm36"), ("ARG", "arg.charmm36"),
                                           ("ILE", "ile.charmm36"), ("HID", "hid.amber")])
def test_shipped_weights_match_vermouth(martini3, resname, stem):
    """The shipped heavy-atom weights are exactly the .map weights (martinize2's beads)."""
    shipped = martini3.for_residue(resname)
    imported = import_vermouth_map(MAPS / f"{stem}.map")
    w_imp, w_ship = imported.bead_weights(), shipped.bead_weights()
    for i, atom in enumerate(imported.atoms):
        if atom.is_hydrogen:
            continue
        j = next(j for j, a in enumerate(shipped.atoms) if atom.name in a.names)
        for k, bead in enumerate(imported.beads):
            assert w_imp[k, i] == pytest.approx(w_ship[shipped.beads.index(bead), j]), (resname, atom.name, bead)
    # the imported mapping carries a complete hierarchy
    _check_hierarchy(imported, template_bonds(resname))


@needs_data
def test_read_vermouth_map_errors(tmp_path):
    (tmp_path / "bad.map").write_text("[ molecule ]\nXXX\n[ atoms ]\n1 C1\n")
    with pytest.raises(MappingError, match=r"bad.map:4: an \[ atoms \] line"):
        read_vermouth_map(tmp_path / "bad.map")
    (tmp_path / "empty.map").write_text("; nothing\n")
    with pytest.raises(MappingError, match="not a vermouth mapping"):
        read_vermouth_map(tmp_path / "empty.map")
    (tmp_path / "both.map").write_text("[ molecule ]\nXXX\n[ atoms ]\n1 C1 A !A\n")
    with pytest.raises(MappingError, match="with and without '!'"):
        read_vermouth_map(tmp_path / "both.map")


@needs_data
def test_cli_import_with_structure_writes_loadable_yaml(tmp_path):
    import gzip

    from openmm_herobm.cli.main import main

    pdb = tmp_path / "chain.pdb"
    pdb.write_bytes(gzip.decompress((DATA / "proteins" / "test" / "pb_7W6F_8I6_B.pdb.gz").read_bytes()))
    out = tmp_path / "PHE.yaml"
    assert main(["mapping", "import", str(MAPS / "phe.charmm36.map"), "-s", str(pdb), "-o", str(out)]) == 0
    load_molecule_mapping(out)


def test_complete_deep_hierarchy_round_trips():
    # a one-bead alkane sitting on its first carbon (like the CA set, but 12 bonds deep)
    atoms = {f"C{i}": "B1" + ("  CM" if i == 1 else "") for i in range(1, 13)}
    bonds = [[f"C{i}", f"C{i + 1}"] for i in range(1, 12)]
    m = parse_molecule_mapping({"molecule": "DOD", "atoms": atoms, "bonds": bonds}, require_hierarchy=False)
    done = complete_hierarchy(m)
    assert max(mm.level for a in done.atoms for mm in a.memberships) == 12
    _same_mapping(done, parse_molecule_mapping(yaml.safe_load(done.to_yaml())))


def test_doc_examples_match_code():
    """The worked examples of docs/mapping-format.md are what the code reads and writes."""
    import re

    doc = (REPO / "docs" / "mapping-format.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", doc, re.S)
    phe_doc, tolu_in, tolu_out = blocks[0], blocks[1], blocks[2]
    assert phe_doc == shipped_text("PHE").split("\n", 1)[1]  # the shipped file, minus its comment line
    tolu = parse_molecule_mapping(yaml.safe_load(tolu_in), "TOLU.yaml", require_hierarchy=False)
    done = complete_hierarchy(tolu).to_yaml()
    for line in tolu_out.splitlines():
        if line.strip() not in ("", "..."):
            assert line in done.splitlines(), line
    # R1 = (CT + CZ + CE1/2 + CE2/2) / 3: all carbons, so mass weighting is geometric here
    w = tolu.bead_weights()
    w = w / w.sum(axis=1, keepdims=True)
    names = [a.name for a in tolu.atoms]
    np.testing.assert_allclose([w[0, names.index(n)] for n in ("CT", "CZ", "CE1", "CE2")], [1 / 3, 1 / 3, 1 / 6, 1 / 6])

"""Structure I/O on real data: formats, insertion codes, chains, CG files,
bad inputs, atomic writes and make_whole."""

import gzip
import os
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

from openmm_herobm.errors import StructureError
from openmm_herobm.io import (
    atom_slice,
    atomic_output,
    check_output_path,
    insertion_code,
    is_coarse_grained,
    load_structure,
    make_whole,
    save_structure,
    save_trajectory,
)
from openmm_herobm.io import writers as writers_module

DATA = Path("/work/shared/data")
CHAIN = DATA / "proteins/test/pb_8AEU_M0L_A.pdb.gz"  # 87 residues, no chain break
ICODE_CHAIN = DATA / "proteins/train/pb_7LMO_NYO_A.pdb.gz"  # insertion codes 27A, 27B, 66A, ...
DIMER = DATA / "martinize2_pairs/tier-1_3i40/3i40.pdb"
CG_UBQ = DATA / "martinize2_pairs/tier-1_1UBQ/martinize2/cg.pdb"
CG_DIMER = DATA / "martinize2_pairs/tier-1_3i40/martinize2/cg.pdb"
MEMBRANE = DATA / "cg_real/mstool_mix8_419lipids.gro.gz"
CONDENSATE = DATA / "cg_real/m3idp_GY23_24us-nopbc.gro.gz"
AA_BILAYER = DATA / "lipids/charmm36_POPCpure.gro.gz"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared data not available")


def _text(path):
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt") as fh:
        return fh.read().splitlines()


def _atom_lines(path):
    return [line for line in _text(path) if line.startswith(("ATOM  ", "HETATM"))]


def _residue_keys(traj):
    return [(r.chain.chain_id, r.name, r.resSeq, insertion_code(r)) for r in traj.topology.residues]


def _residue_spans(traj, names=None):
    """Largest intra-residue particle distance of each residue (frame 0)."""
    spans = {}
    for res in traj.topology.residues:
        if names is None or res.name in names:
            x = traj.xyz[0, [a.index for a in res.atoms]]
            spans[res.index] = np.linalg.norm(x[:, None] - x[None], axis=-1).max()
    return np.array(list(spans.values()))


@pytest.fixture(scope="module")
def chain():
    return load_structure(CHAIN)


@pytest.fixture(scope="module")
def membrane():
    return load_structure(MEMBRANE)


# ------------------------------------------------------------------ reading
def test_pdb_reader_matches_raw_records(chain):
    lines = _atom_lines(CHAIN)
    assert chain.n_atoms == len(lines)
    assert [a.name for a in chain.topology.atoms] == [l[12:16].strip() for l in lines]
    raw = np.array([[float(l[30:38]), float(l[38:46]), float(l[46:54])] for l in lines]) / 10
    np.testing.assert_allclose(chain.xyz[0], raw, atol=1e-6)
    assert [a.element.symbol for a in chain.topology.atoms] == [l[76:78].strip().capitalize() for l in lines]
    assert chain.topology.n_bonds > chain.n_atoms - chain.topology.n_residues  # standard bonds added
    assert not is_coarse_grained(chain.topology)


@pytest.mark.parametrize("ext", ["pdb", "cif", "gro", "dcd", "xtc", "trr"])
def test_round_trip_every_format(chain, tmp_path, ext):
    boxed = md.Trajectory(chain.xyz, chain.topology)
    boxed.unitcell_vectors = np.diag([7.5, 8.0, 9.0])[None].astype(np.float32)
    out = tmp_path / f"chain.{ext}"
    if ext in ("pdb", "cif", "gro"):
        save_structure(boxed, out)
        back = load_structure(out)
    else:
        save_structure(boxed, tmp_path / "top.pdb")
        save_trajectory(boxed, out)
        back = load_structure(out, top=tmp_path / "top.pdb")
    np.testing.assert_allclose(back.xyz, chain.xyz, atol=1e-3)
    np.testing.assert_allclose(back.unitcell_lengths, [[7.5, 8.0, 9.0]], atol=1e-3)
    assert [a.name for a in back.topology.atoms] == [a.name for a in chain.topology.atoms]
    assert [r.resSeq for r in back.topology.residues] == [r.resSeq for r in chain.topology.residues]
    if ext != "gro":  # GRO has no chain ids
        assert [c.chain_id for c in back.topology.chains] == ["A"]


def test_insertion_codes_round_trip(tmp_path):
    raw = list(dict.fromkeys((l[22:26].strip(), l[26].strip()) for l in _atom_lines(ICODE_CHAIN)))
    traj = load_structure(ICODE_CHAIN)
    keys = [(str(r.resSeq), insertion_code(r)) for r in traj.topology.residues]
    assert keys == raw
    assert ("27", "A") in keys and ("27", "B") in keys and ("66", "A") in keys
    for ext in ("pdb", "cif"):
        save_structure(traj, tmp_path / f"x.{ext}")
        assert _residue_keys(load_structure(tmp_path / f"x.{ext}")) == _residue_keys(traj)
    line = next(l for l in _text(tmp_path / "x.pdb") if l[22:27] == "  27A")
    assert line[17:20] == "GLY" and line[21] == "A"
    # trajectories reuse the topology object, so the codes survive there too
    save_trajectory(traj, tmp_path / "x.xtc")
    assert _residue_keys(load_structure(tmp_path / "x.xtc", top=tmp_path / "x.pdb")) == _residue_keys(traj)
    # and atom_slice keeps them (mdtraj's own atom_slice drops them)
    ca = atom_slice(traj, traj.topology.select("name CA"))
    assert [(r.resSeq, insertion_code(r)) for r in ca.topology.residues] == \
        [(r.resSeq, insertion_code(r)) for r in traj.topology.residues]


def test_multi_chain_pdb_with_ter(tmp_path):
    traj = load_structure(DIMER)
    lines = _atom_lines(DIMER)
    assert traj.n_atoms == len(lines)
    # A, B protein chains, then the A and B waters after the TER records
    chains = list(traj.topology.chains)
    assert [c.chain_id for c in chains] == ["A", "B", "A", "B"]
    assert [c.n_residues for c in chains][:2] == [21, 30]
    assert {r.name for r in traj.topology.chain(2).residues} == {"HOH"}
    np.testing.assert_allclose(traj.unitcell_lengths[0] * 10, [77.22] * 3, atol=1e-2)
    save_structure(traj, tmp_path / "dimer.pdb")
    text = _text(tmp_path / "dimer.pdb")
    assert sum(l.startswith("TER") for l in text) == 4
    assert text[0].startswith("CRYST1") and text[-1] == "END"
    back = load_structure(tmp_path / "dimer.pdb")
    assert _residue_keys(back) == _residue_keys(traj)
    np.testing.assert_allclose(back.xyz, traj.xyz, atol=1e-4)


@pytest.mark.parametrize("path", [CG_UBQ, CG_DIMER])
def test_martinize2_cg_pdb(path, tmp_path):
    traj = load_structure(path)
    lines = _atom_lines(path)
    assert traj.n_atoms == len(lines)
    assert [a.name for a in traj.topology.atoms] == [l[12:16].strip() for l in lines]
    assert {a.name for a in traj.topology.atoms} >= {"BB", "SC1"}
    # no sulfur from "SC1", no boron from "BB", and no CONECT/template bonds
    assert all(a.element is md.element.virtual for a in traj.topology.atoms)
    assert is_coarse_grained(traj.topology)
    assert traj.topology.n_bonds == 0
    save_structure(traj, tmp_path / "cg.pdb")
    written = _atom_lines(tmp_path / "cg.pdb")
    # same columns as martinize2 from atom name to z (serials differ: we count TER)
    assert [l[12:54] for l in written] == [l[12:54] for l in lines]
    assert all(l[76:78] == "  " for l in written)


def test_atomistic_pdb_without_element_column(chain, tmp_path):
    path = tmp_path / "noelem.pdb"
    path.write_text("\n".join(l[:76] for l in _text(CHAIN)) + "\n")
    traj = load_structure(path)
    assert [a.element for a in traj.topology.atoms] == [a.element for a in chain.topology.atoms]


def test_gro_elements_cg_and_atomistic(membrane):
    assert all(a.element is md.element.virtual for a in membrane.topology.atoms)
    names = {r.name for r in membrane.topology.residues}
    assert {"POPC", "CHOL", "W", "ION"} <= names
    bilayer = load_structure(AA_BILAYER)
    counts = {}
    for a in bilayer.topology.atoms:
        counts[a.element.symbol] = counts.get(a.element.symbol, 0) + 1
    assert counts["P"] == 72 and counts["N"] == 72 and counts["H"] > counts["C"]
    # residue names are not rewritten (mdtraj would turn SOL into HOH)
    assert {r.name for r in bilayer.topology.residues} == {"POPC", "SOL"}


@pytest.mark.parametrize("ext", ["pdb", "cif", "gro"])
def test_multi_frame_structures_and_frames_selection(chain, tmp_path, ext):
    traj = md.Trajectory(np.stack([chain.xyz[0] + k for k in range(4)]), chain.topology)
    path = tmp_path / f"models.{ext}"
    save_trajectory(traj, path)
    back = load_structure(path)
    assert back.n_frames == 4
    np.testing.assert_allclose(back.xyz, traj.xyz, atol=1e-3)
    sub = load_structure(path, frames=slice(1, None, 2))
    np.testing.assert_allclose(sub.xyz, traj.xyz[1::2], atol=1e-3)
    np.testing.assert_allclose(load_structure(path, frames=-1).xyz, traj.xyz[-1:], atol=1e-3)
    with pytest.raises(StructureError, match="out of range"):
        load_structure(path, frames=7)


def test_triclinic_box_round_trip(membrane, tmp_path):
    tric = md.Trajectory(membrane.xyz, membrane.topology)
    tric.unitcell_vectors = np.array([[[10.0, 0, 0], [0, 10.0, 0], [4.0, 3.0, 7.07]]], dtype=np.float32)
    for ext in ("gro", "pdb", "cif"):
        save_structure(tric, tmp_path / f"t.{ext}")
        back = load_structure(tmp_path / f"t.{ext}")
        np.testing.assert_allclose(back.unitcell_vectors, tric.unitcell_vectors, atol=2e-3)


@pytest.mark.parametrize("ext", ["pdb", "cif"])
def test_names_are_not_rewritten(chain, tmp_path, ext):
    """OpenMM's PDBFile/PDBxFile would turn HSD into HIS and OT1 into O."""
    lines = _text(CHAIN)
    first = next(l for l in lines if l.startswith("ATOM"))[22:27]
    lines = [l[:17] + "HSD" + l[20:] if l.startswith("ATOM") and l[22:27] == first else l for l in lines]
    lines = [l[:12] + " OT1" + l[16:] if l.startswith("ATOM") and l[22:27] == first and l[12:16] == " O  "
             else l for l in lines]
    (tmp_path / "src.pdb").write_text("\n".join(lines) + "\n")
    traj = load_structure(tmp_path / "src.pdb")
    if ext == "cif":
        save_structure(traj, tmp_path / "x.cif")
        traj = load_structure(tmp_path / "x.cif")
    res = traj.topology.residue(0)
    assert res.name == "HSD" and "OT1" in [a.name for a in res.atoms]
    assert traj.topology.residue(1).name == chain.topology.residue(1).name


# ------------------------------------------------------------------ bad input
def _expect(path, *words, **kwargs):
    with pytest.raises(StructureError) as info:
        load_structure(path, **kwargs)
    message = str(info.value)
    assert os.path.basename(str(path)) in message and "\n" not in message
    for word in words:
        assert word in message, message
    return message


def test_missing_unsupported_empty(tmp_path):
    _expect(tmp_path / "nope.pdb", "not found")
    (tmp_path / "x.mol2").write_text("x")
    _expect(tmp_path / "x.mol2", "unsupported", ".pdb", ".gro", ".cif", ".xtc")
    (tmp_path / "empty.pdb").write_text("")
    _expect(tmp_path / "empty.pdb", "empty")
    (tmp_path / "remarks.pdb").write_text("\n".join(_text(CHAIN)[:2]) + "\nEND\n")
    _expect(tmp_path / "remarks.pdb", "no ATOM")
    (tmp_path / "zero.gro").write_text("title\n0\n   1.0 1.0 1.0\n")
    _expect(tmp_path / "zero.gro", "no atoms")


def test_truncated_files(tmp_path):
    gro = _text(MEMBRANE)
    cut = tmp_path / "cut.gro"
    cut.write_text("\n".join(gro[:500]) + "\n")
    _expect(cut, "truncated", "11405 atoms")
    wrong_count = list(gro)
    wrong_count[1] = str(int(gro[1]) + 3)
    (tmp_path / "count.gro").write_text("\n".join(wrong_count) + "\n")
    _expect(tmp_path / "count.gro", "truncated", "11408 atoms")
    pdb = _text(CHAIN)
    (tmp_path / "cut.pdb").write_text("\n".join(pdb[:40] + [pdb[40][:45]]))
    _expect(tmp_path / "cut.pdb", "line 41", "truncated")
    raw = gzip.compress("\n".join(pdb).encode())
    (tmp_path / "cut.pdb.gz").write_bytes(raw[: len(raw) // 2])
    _expect(tmp_path / "cut.pdb.gz", "truncated")


def test_non_finite_coordinates_name_the_atom(tmp_path):
    pdb = _text(CHAIN)
    k = [i for i, l in enumerate(pdb) if l.startswith("ATOM")][10]
    pdb[k] = pdb[k][:38] + "     nan" + pdb[k][46:]
    (tmp_path / "nan.pdb").write_text("\n".join(pdb) + "\n")
    line = pdb[k]
    _expect(tmp_path / "nan.pdb", "NaN", line[12:16].strip(), line[17:20], str(int(line[22:26])), "chain A")
    gro = _text(MEMBRANE)
    gro[100] = gro[100][:28] + "     inf" + gro[100][36:]
    (tmp_path / "inf.gro").write_text("\n".join(gro) + "\n")
    _expect(tmp_path / "inf.gro", "inf", gro[100][10:15].strip(), "POPC")


def test_trajectory_topology_mismatch(chain, tmp_path):
    save_trajectory(chain, tmp_path / "t.xtc")
    _expect(tmp_path / "t.xtc", "topology")
    _expect(tmp_path / "t.xtc", str(chain.n_atoms), "166", top=CG_UBQ)
    save_trajectory(chain, tmp_path / "t.dcd")
    _expect(tmp_path / "t.dcd", str(chain.n_atoms), "166", top=CG_UBQ)


# ------------------------------------------------------------------ writing
def test_output_path_checked_before_work(chain, tmp_path, monkeypatch):
    called = []
    monkeypatch.setattr(writers_module, "_check_finite", lambda *a: called.append(a))
    with pytest.raises(StructureError, match=r"\.pdb.*\.gro.*\.cif"):
        save_structure(chain, tmp_path / "out.mol2")
    with pytest.raises(StructureError, match="structure"):
        save_structure(chain, tmp_path / "out.xtc")  # a trajectory format is no structure
    with pytest.raises(StructureError, match="does not exist"):
        save_trajectory(chain, tmp_path / "missing" / "out.xtc")
    assert called == [] and list(tmp_path.iterdir()) == []
    assert check_output_path(tmp_path / "a.XTC", "trajectory") == ".xtc"


def test_failed_save_leaves_nothing_behind(chain, tmp_path, monkeypatch):
    bad = md.Trajectory(chain.xyz.copy(), chain.topology)
    bad.xyz[0, 5] = np.nan
    with pytest.raises(StructureError, match="NaN"):
        save_structure(bad, tmp_path / "nan.pdb")
    assert list(tmp_path.iterdir()) == []

    # a writer that dies after writing half of the file: the previous file survives intact
    target = tmp_path / "keep.pdb"
    save_structure(chain, target)
    before = target.read_text()
    real = writers_module._pdb_lines

    def dying(traj, name):
        for k, line in enumerate(real(traj, name)):
            if k == traj.n_atoms // 2:
                raise RuntimeError("disk full")
            yield line

    monkeypatch.setattr(writers_module, "_pdb_lines", dying)
    with pytest.raises(RuntimeError, match="disk full"):
        save_structure(chain.slice(0, copy=False), target)
    assert target.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.pdb"]


def test_atomic_output(tmp_path):
    with atomic_output(tmp_path / "a.txt") as tmp:
        assert Path(tmp).parent == tmp_path and not (tmp_path / "a.txt").exists()
        Path(tmp).write_text("done")
    assert (tmp_path / "a.txt").read_text() == "done"
    assert (tmp_path / "a.txt").stat().st_mode & 0o044  # not mkstemp's private 0600
    with pytest.raises(ValueError):
        with atomic_output(tmp_path / "b.txt") as tmp:
            Path(tmp).write_text("partial")
            raise ValueError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


# ------------------------------------------------------------------ make_whole
def _wrap(traj):
    """Put every particle into the primary cell (what a wrapped MD frame looks like)."""
    box = traj.unitcell_vectors.astype(np.float64)
    frac = np.einsum("fni,fij->fnj", traj.xyz.astype(np.float64), np.linalg.inv(box))
    frac -= np.floor(frac)
    out = md.Trajectory(np.einsum("fnj,fjk->fnk", frac, box).astype(np.float32), traj.topology)
    out.unitcell_vectors = traj.unitcell_vectors
    return out


def _assert_same_shape_per_residue(a, b, atol=1e-4):
    """Each residue of a equals the one of b up to a rigid translation."""
    for res in a.topology.residues:
        idx = [x.index for x in res.atoms]
        np.testing.assert_allclose(a.xyz[0, idx] - a.xyz[0, idx[:1]], b.xyz[0, idx] - b.xyz[0, idx[:1]], atol=atol)


def test_make_whole_membrane(membrane):
    lipids = {"POPC", "CHOL"}
    wrapped = _wrap(membrane)
    before = _residue_spans(wrapped, lipids)
    assert before.max() > 8.0 and (before > 3.0).sum() >= 10  # split across the boundaries
    whole = make_whole(wrapped)
    assert _residue_spans(whole, lipids).max() < 3.0  # Martini POPC is at most ~2.7 nm long
    _assert_same_shape_per_residue(whole, membrane)
    # the shipped frame is already whole (lipids stick out of the box): nothing changes shape
    _assert_same_shape_per_residue(make_whole(membrane), membrane)


def test_make_whole_real_condensate():
    """The "nopbc" Martini3-IDP frame still has side chains on the far side of the box."""
    traj = load_structure(CONDENSATE)
    peptides = {"GLY", "HIS", "LEU", "ALA", "TYR", "PHE"}
    assert _residue_spans(traj, peptides).max() > 5.0
    whole = make_whole(traj)
    assert _residue_spans(whole, peptides).max() < 1.0
    bb = traj.topology.select("name BB")
    d = np.linalg.norm(np.diff(whole.xyz[0, bb].reshape(54, 23, 3), axis=1), axis=2)
    assert d.max() < 0.6  # every peptide is continuous, not only its residues


@pytest.mark.parametrize("box", [
    np.diag([3.0, 3.2, 2.8]),                                   # orthorhombic
    np.array([[3.5, 0, 0], [0, 3.5, 0], [1.75, 1.75, 2.475]]),  # rhombic dodecahedron
])
def test_make_whole_protein_in_small_box(chain, box):
    extent = chain.xyz[0].max(0) - chain.xyz[0].min(0)
    assert (extent > np.diag(box)).any()  # the protein is bigger than the box
    boxed = md.Trajectory(chain.xyz, chain.topology)
    boxed.unitcell_vectors = box[None].astype(np.float32)
    wrapped = _wrap(boxed)
    pairs = np.array([[a.index, b.index] for a, b in chain.topology.bonds])
    bond = lambda t: t.xyz[0, pairs[:, 1]] - t.xyz[0, pairs[:, 0]]  # noqa: E731
    assert np.abs(bond(wrapped) - bond(chain)).max() > 1.0  # wrapping broke bonds
    whole = make_whole(wrapped)
    np.testing.assert_allclose(bond(whole), bond(chain), atol=1e-4)
    # the whole chain is one rigid translation of the original
    shift = whole.xyz[0] - chain.xyz[0]
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-4)
    assert whole is not wrapped and np.shares_memory(whole.xyz, wrapped.xyz) is False


def test_make_whole_explicit_molecules_and_no_box(chain):
    boxed = md.Trajectory(chain.xyz, chain.topology)
    boxed.unitcell_vectors = np.diag([3.0, 3.0, 3.0])[None].astype(np.float32)
    wrapped = _wrap(boxed)
    whole = make_whole(wrapped, molecules=[np.arange(chain.n_atoms)])
    shift = whole.xyz[0] - chain.xyz[0]
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-4)
    # only the listed atoms move
    half = make_whole(wrapped, molecules=[np.arange(100)])
    np.testing.assert_array_equal(half.xyz[0, 100:], wrapped.xyz[0, 100:])
    no_box = make_whole(chain)
    np.testing.assert_array_equal(no_box.xyz, chain.xyz)
    assert no_box.xyz is not chain.xyz

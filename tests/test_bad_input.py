"""Bad input is refused with one HeroBMError line, never another exception.

Property-based part: hypothesis mutates real inputs (the bundled Martini 3 ubiquitin, the GRO,
mmCIF, DCD, XTC and TRR written from it, the head of the bundled all-atom 1UBQ, shipped mapping
YAMLs) by deleting, duplicating, swapping and cutting lines, putting garbage, huge and NaN
numbers, unicode and odd widths into fields, cutting and flipping bytes, and feeds each result
to the public readers: it must either load or raise HeroBMError.  Reading must leave nothing
next to the input.

Example part: the inputs issue 14 found silently accepted or answered with a traceback.
"""

from __future__ import annotations

import gzip
import os
import struct
import tempfile
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openmm_herobm.backmapping import backmap
from openmm_herobm.cli.main import main
from openmm_herobm.errors import HeroBMError, StructureError
from openmm_herobm.io import count_frames, load_frames, load_structure, save_structure, save_trajectory
from openmm_herobm.io.readers import MAX_ABS_COORDINATE_NM
from openmm_herobm.mapping import MappingSet, load_molecule_mapping, parse_molecule_mapping
from openmm_herobm.mapping import map_structure
from openmm_herobm.resources import mappings_dir

ROOT = Path(__file__).resolve().parents[1]
CG = ROOT / "examples" / "data" / "1ubq_martinize2_cg.pdb"
AA = ROOT / "examples" / "data" / "1ubq.pdb"

_WORK_DIR = tempfile.TemporaryDirectory(prefix="herobm-bad-input-")  # removed when the run ends
_WORK = Path(_WORK_DIR.name)


def _real_inputs():
    """Text of the real files hypothesis starts from, and bytes of real trajectories."""
    cg = load_structure(CG)
    for ext in (".gro", ".cif"):
        save_structure(cg, _WORK / f"cg{ext}")
    rng = np.random.default_rng(0)
    frames = md.Trajectory(cg.xyz + rng.normal(0, 0.02, (3,) + cg.xyz.shape[1:]).astype(np.float32), cg.topology)
    frames.unitcell_vectors = np.repeat(np.eye(3, dtype=np.float32)[None] * 8.0, 3, axis=0)
    for ext in (".dcd", ".xtc", ".trr"):
        save_trajectory(frames, _WORK / f"cg{ext}")
    aa_head = [line for line in AA.read_text().splitlines() if line.startswith("ATOM")][:40]
    cryst = "CRYST1   80.000   80.000   80.000  90.00  90.00  90.00 P 1           1\n"
    text = {".pdb": cryst + CG.read_text(), ".gro": (_WORK / "cg.gro").read_text(),
            ".cif": (_WORK / "cg.cif").read_text(), "aa.pdb": "\n".join(aa_head) + "\nEND\n"}
    binary = {ext: (_WORK / f"cg{ext}").read_bytes() for ext in (".dcd", ".xtc", ".trr")}
    return cg, text, binary


CG_TRAJ, TEXT, BINARY = _real_inputs()
MAPPINGS = {name: (mappings_dir() / name).read_text()
            for name in ("martini3/PHE.yaml", "martini3/GLY.yaml", "martini3_lipids/POPC.yaml")}

# field contents that broke parsers before, plus anything hypothesis makes up
GARBAGE = st.one_of(
    st.sampled_from(["nan", "NaN", "inf", "-inf", "1e9", "-1e30", "1e400", "", " ", "abc", "1_0", "\u0663",
                     "\u00e9\u00fc", "\x00", "\t", "--", "e", "+", ".", "0x1p3", "9" * 20, "-0", "1,5",
                     "MODEL     2", "ENDMDL", "TER", "CRYST1", "t= e", "!!python/object/apply:os.system",
                     "{", "[", ":", "- ", "&a", "*a", "? ", "P2", "P9ZZ", "1/0", "0/0", ",", "CM CM",
                     "0.000", "-0.0", "1e300", "1e-300", "   nan", "99999", "-9999"]),
    st.text(max_size=12),
    st.floats().map(str),
    st.integers(-10**12, 10**12).map(str),
)


# the fixed columns of each format (PDB: serial, name, residue, chain, resSeq, x, y, z, element,
# CRYST1 a b c alpha beta gamma; GRO: resid, residue, name, serial, x, y, z), so that a field
# gets garbage of its own width or of another width
PDB_FIELDS = [(6, 11), (12, 16), (17, 21), (21, 22), (22, 26), (30, 38), (38, 46), (46, 54), (76, 78),
              (6, 15), (15, 24), (24, 33), (33, 40), (40, 47), (47, 54)]
GRO_FIELDS = [(0, 5), (5, 10), (10, 15), (15, 20), (20, 28), (28, 36), (36, 44), (0, 10), (10, 20), (20, 30)]


@st.composite
def mutated_text(draw, text, fields=()):
    """``text`` with 1-4 line edits, sometimes cut at a character."""
    lines = text.splitlines()
    ops = ["delete", "duplicate", "cut", "replace", "replace", "insert", "swap"] + ["field"] * 3 * bool(fields)
    for _ in range(draw(st.integers(1, 4))):
        if not lines:
            break
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(ops))
        if op == "field":
            a, b = draw(st.sampled_from(fields))
            value = draw(GARBAGE)
            if draw(st.booleans()):
                value = value[:b - a].rjust(b - a)
            lines[i] = lines[i][:a].ljust(a) + value + lines[i][b:]
        elif op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "cut":
            lines[i] = lines[i][:draw(st.integers(0, len(lines[i])))]
        elif op == "replace":  # a field: any column range, garbage of any width
            a = draw(st.integers(0, len(lines[i])))
            b = draw(st.integers(a, a + 10))
            lines[i] = lines[i][:a] + draw(GARBAGE) + lines[i][b:]
        elif op == "insert":
            lines.insert(i, draw(st.one_of(GARBAGE, st.text(max_size=80))))
        else:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
    out = "\n".join(lines) + "\n"
    if draw(st.integers(0, 9)) == 0:
        out = out[:draw(st.integers(0, len(out)))]
    return out


@st.composite
def mutated_bytes(draw, data):
    """``data`` cut, with bytes overwritten or inserted, or replaced by random bytes."""
    op = draw(st.sampled_from(["cut", "overwrite", "overwrite", "insert", "random"]))
    if op == "random":
        return draw(st.binary(min_size=1, max_size=400))
    if op == "cut":
        return data[:draw(st.integers(1, len(data) - 1))]
    i = draw(st.integers(0, len(data) - 1))
    junk = draw(st.binary(min_size=1, max_size=16))
    if op == "insert":
        return data[:i] + junk + data[i:]
    return data[:i] + junk + data[i + len(junk):]


def _accepts_or_refuses(read, path):
    """``read(path)`` loads or raises HeroBMError (one line); nothing else appears next to the file."""
    before = set(os.listdir(path.parent))
    try:
        read(path)
    except HeroBMError as exc:
        assert "\n" not in str(exc), str(exc)
    assert set(os.listdir(path.parent)) == before


def _write(folder, name, content):
    path = Path(folder) / name
    if isinstance(content, str):
        content = content.encode("utf-8", errors="surrogatepass")
    path.write_bytes(content)
    return path




def fuzz(max_examples):
    """Same examples every run (a failure reproduces), no example database in the repository."""
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ------------------------------------------------------------------ property-based
@fuzz(500)
@given(content=st.one_of(mutated_text(TEXT[".pdb"], PDB_FIELDS), mutated_text(TEXT["aa.pdb"], PDB_FIELDS)),
       gz=st.booleans())
def test_pdb_reader_loads_or_refuses(content, gz):
    with tempfile.TemporaryDirectory() as folder:
        raw = content.encode("utf-8", errors="surrogatepass")
        path = _write(folder, "x.pdb.gz" if gz else "x.pdb", gzip.compress(raw) if gz else raw)
        _accepts_or_refuses(load_structure, path)


@fuzz(500)
@given(content=mutated_text(TEXT[".gro"], GRO_FIELDS))
def test_gro_reader_loads_or_refuses(content):
    with tempfile.TemporaryDirectory() as folder:
        _accepts_or_refuses(load_structure, _write(folder, "x.gro", content))


@fuzz(300)
@given(content=mutated_text(TEXT[".cif"]))
def test_cif_reader_loads_or_refuses(content):
    with tempfile.TemporaryDirectory() as folder:
        _accepts_or_refuses(load_structure, _write(folder, "x.cif", content))


@fuzz(300)
@given(data=st.data(), ext=st.sampled_from([".dcd", ".xtc", ".trr"]))
def test_trajectory_readers_load_or_refuse(data, ext):
    content = data.draw(mutated_bytes(BINARY[ext]))
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, "x" + ext, content)
        _accepts_or_refuses(lambda p: load_structure(p, top=CG_TRAJ), path)
        _accepts_or_refuses(count_frames, path)


@fuzz(600)
@given(data=st.data(), name=st.sampled_from(sorted(MAPPINGS)))
def test_mapping_files_load_or_refuse(data, name):
    content = data.draw(st.one_of(mutated_text(MAPPINGS[name]), mutated_bytes(MAPPINGS[name].encode())))
    with tempfile.TemporaryDirectory() as folder:
        path = _write(folder, "x.yaml", content)
        _accepts_or_refuses(load_molecule_mapping, path)
        _accepts_or_refuses(lambda p: load_molecule_mapping(p, require_hierarchy=False), path)
        _accepts_or_refuses(lambda p: MappingSet.load(p.parent), path)


# YAML-shaped data of any type where the parser expects names, lists and maps
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=8),
                     st.sampled_from(["BB", "SC1", "CA", "P1A", "P2AB", "1/2", "!", "?", "CM", "BB P1A"]))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                         st.dictionaries(_SCALARS, inner, max_size=4)),
                       max_leaves=12)
_KEYS = st.sampled_from(["molecule", "atoms", "beads", "cg_name", "residue_names", "weighting", "bonds", "elements"])


@fuzz(600)
@given(base=st.sampled_from(sorted(MAPPINGS)), changes=st.dictionaries(_KEYS, _VALUES, min_size=1, max_size=3))
def test_mapping_parser_loads_or_refuses_any_yaml_types(base, changes):
    data = yaml.safe_load(MAPPINGS[base])
    data.update(changes)
    try:
        parse_molecule_mapping(data, source="fuzz.yaml")
        parse_molecule_mapping(data, source="fuzz.yaml", require_hierarchy=False)
    except HeroBMError as exc:
        assert "\n" not in str(exc), str(exc)


# ------------------------------------------------------------------ examples
def _cg_lines(resids=None):
    lines = [line for line in CG.read_text().splitlines() if line.startswith("ATOM")]
    return [line for line in lines if resids is None or int(line[22:26]) in resids]


def _pdb(folder, lines, name="cg.pdb"):
    return _write(folder, name, "\n".join(lines) + "\nEND\n")


def _cli(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line_error(capsys, *args, words=()):
    code, _, err = _cli(capsys, *args)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("herobm: error: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def test_lone_one_bead_residue_is_refused_in_one_line(capsys, tmp_path):
    """A single GLY (one BB bead) has no neighbour to orient its atoms: the network would crash
    (no edge at all) or, beside other molecules, put N, CA, C and O all on the bead."""
    gly = _pdb(tmp_path, _cg_lines({10}))
    out = tmp_path / "aa.pdb"
    words = ("GLY 10 chain A", "bead BB", "8 A", "lone one-bead residue")
    _one_line_error(capsys, "backmap", gly, "-o", out, "--no-minimize", words=(str(gly),) + words)
    _one_line_error(capsys, "backmap", gly, "-o", out, "--no-progress", words=words)  # the pipeline
    assert not out.exists()
    far = CG_TRAJ.atom_slice([a.index for a in CG_TRAJ.topology.atoms if a.residue.resSeq in (9, 10, 11)])
    gly = next(a.index for a in far.topology.atoms if a.residue.name == "GLY")
    far.xyz[0, gly] += 5.0  # GLY 10 moved 5 nm away from THR 9 and LYS 11
    with pytest.raises(HeroBMError, match="GLY 10 chain A: bead BB has no other bead"):
        backmap(far)
    far.xyz[0, gly] -= 5.0  # back among its neighbours it backmaps, its atoms apart
    aa = backmap(far, fit=False).trajectory
    x = aa.xyz[0, [a.index for a in aa.topology.atoms if a.residue.name == "GLY"]]
    assert len(x) == 4 and np.linalg.norm(x[:, None] - x[None], axis=-1).max() > 0.2  # N, CA, C, O
    # two residues with one bead each backmap when they are neighbours
    code, stdout, _ = _cli(capsys, "backmap", _pdb(tmp_path, _cg_lines({47, 48})), "-o", out, "--no-minimize")
    assert code == 0 and "2 residues" in stdout and out.exists()


def test_duplicate_bead_names_file_residue_bead(capsys, tmp_path):
    lines = _cg_lines(range(1, 6))
    k = next(i for i, line in enumerate(lines) if line[12:16].strip() == "SC1" and int(line[22:26]) == 3)
    copy = lines[k][:30] + f"{float(lines[k][30:38]) + 3.0:8.3f}" + lines[k][38:]
    path = _pdb(tmp_path, lines[:k + 1] + [copy] + lines[k + 1:])
    out = tmp_path / "aa.pdb"
    _one_line_error(capsys, "backmap", path, "-o", out, "--no-minimize",
                    words=(str(path), "ILE 3 chain A", "bead SC1 appears twice"))
    assert not out.exists()
    with pytest.raises(StructureError, match="ILE 3 chain A: bead SC1 appears twice"):
        backmap(load_structure(path))
    # a repeated heavy atom of an all-atom structure is refused too (forward mapping)
    aa = AA.read_text().splitlines()
    k = next(i for i, line in enumerate(aa) if line.startswith("ATOM") and line[12:16].strip() == "CA")
    path = _write(tmp_path, "aa_dup.pdb", "\n".join(aa[:k + 1] + aa[k:]) + "\n")
    with pytest.raises(StructureError, match="MET 1 chain A: atom CA appears twice"):
        map_structure(path, "martini3")


def test_far_and_non_finite_coordinates_name_the_atom(tmp_path):
    assert MAX_ABS_COORDINATE_NM == 1e4
    lines = _cg_lines()
    k = 7
    far = lines[k][:38] + "  1.0e9 " + lines[k][46:]  # 1e9 A fits the 8 PDB columns
    with pytest.raises(StructureError) as info:
        load_structure(_pdb(tmp_path, lines[:k] + [far] + lines[k + 1:]))
    message = str(info.value)
    for word in ("cg.pdb", "1e+09 A", "frame 0", "atom " + lines[k][12:16].strip(), "residue " + lines[k][17:20],
                 str(int(lines[k][22:26])), "beyond +-100000 A"):
        assert word in message, (word, message)
    # the bound itself: 9990 nm passes, 10010 nm is refused (trajectories carry any float)
    frames = md.Trajectory(np.repeat(CG_TRAJ.xyz, 2, axis=0), CG_TRAJ.topology)
    frames.xyz[1, 5, 2] = 9990.0
    save_trajectory(frames, tmp_path / "t.dcd")
    assert load_structure(tmp_path / "t.dcd", top=CG_TRAJ).n_frames == 2
    frames.xyz[1, 5, 2] = -10010.0
    save_trajectory(frames, tmp_path / "t.dcd")
    with pytest.raises(StructureError, match=r"coordinate -1\.001e\+05 A in frame 1 at atom SC1 of residue ILE 3"):
        load_structure(tmp_path / "t.dcd", top=CG_TRAJ)
    # an in-memory trajectory handed to backmap is checked the same way
    bad = CG_TRAJ[:]
    bad.xyz = bad.xyz.copy()
    bad.xyz[0, 3, 1] = np.nan
    with pytest.raises(StructureError, match="the input trajectory: non-finite coordinate .* residue GLN 2"):
        backmap(bad)
    # a box that is not finite would make every position NaN when molecules are made whole
    gro = TEXT[".gro"].splitlines()
    gro[-1] = "       nan       nan       nan"
    with pytest.raises(StructureError, match="x.gro: the unit cell of frame 0 is not finite"):
        load_structure(_write(tmp_path, "x.gro", "\n".join(gro) + "\n"))


def _trajectory(tmp_path, ext, n_frames=5, stem="t"):
    rng = np.random.default_rng(1)
    frames = md.Trajectory(CG_TRAJ.xyz + rng.normal(0, 0.05, (n_frames,) + CG_TRAJ.xyz.shape[1:]).astype(np.float32),
                           CG_TRAJ.topology, time=np.arange(n_frames) * 10.0)
    frames.unitcell_vectors = np.repeat(np.diag([7.0, 8.0, 9.0]).astype(np.float32)[None], n_frames, axis=0)
    path = tmp_path / f"{stem}{ext}"
    save_trajectory(frames, path)
    return frames, path


@pytest.mark.parametrize("ext", [".dcd", ".xtc", ".trr"])
def test_truncated_trajectory_says_after_which_frame(tmp_path, ext, capsys):
    frames, path = _trajectory(tmp_path, ext)
    whole = path.read_bytes()
    cut = tmp_path / f"cut{ext}"
    cut.write_bytes(whole[:-7])  # inside the last frame
    for read in (lambda: load_structure(cut, top=CG_TRAJ), lambda: count_frames(cut),
                 lambda: load_frames(CG, cut, 0, 2)):
        with pytest.raises(StructureError, match=f"cut{ext}: truncated .*after frame 4"):
            read()
    out = tmp_path / "aa.pdb"
    _one_line_error(capsys, "backmap", CG, "-t", cut, "-o", out, "--no-minimize", words=("after frame 4",))
    assert not out.exists()
    assert count_frames(path) == 5 and load_structure(path, top=CG_TRAJ).n_frames == 5


def test_dcd_cut_at_a_frame_boundary_is_truncated_by_its_header(tmp_path):
    _, path = _trajectory(tmp_path, ".dcd")
    frame_bytes = path.stat().st_size - _trajectory(tmp_path, ".dcd", 4, stem="four")[1].stat().st_size
    cut = tmp_path / "cut.dcd"
    cut.write_bytes(path.read_bytes()[:-frame_bytes])  # a whole number of frames, one fewer than the header says
    with pytest.raises(StructureError, match="truncated after frame 4 .*its header says 5"):
        count_frames(cut)


def test_xtc_read_matches_mdtraj_and_blocks(tmp_path):
    """XTC goes through the header check and OpenMM's decoder: the same numbers as mdtraj."""
    frames, path = _trajectory(tmp_path, ".xtc", 7)
    ours, ref = load_structure(path, top=CG_TRAJ), md.load(str(path), top=CG_TRAJ.topology)
    assert np.array_equal(ours.xyz, ref.xyz) and np.array_equal(ours.time, ref.time)
    assert np.array_equal(ours.unitcell_vectors, ref.unitcell_vectors)
    block = load_frames(CG, path, 2, 6, 2)
    assert np.array_equal(block.xyz, ref.xyz[2:6:2]) and np.array_equal(block.time, ref.time[2:6:2])
    no_box = md.Trajectory(frames.xyz, frames.topology)
    save_trajectory(no_box, tmp_path / "nobox.xtc")
    assert load_structure(tmp_path / "nobox.xtc", top=CG_TRAJ).unitcell_vectors is None


@pytest.mark.parametrize("field, offset, value, match", [
    ("magic", 0, 7, "no XTC frame starts here"),
    ("atom count", 4, 10**9, "atom count"),
    ("run-size index", 84, 200, "run-size index 200"),
    ("payload size", 88, 2**30, "payload size"),
])
def test_damaged_xtc_header_is_refused_before_decoding(tmp_path, field, offset, value, match):
    """Values like these made the C decoders read or write out of bounds and kill the process."""
    _, path = _trajectory(tmp_path, ".xtc", 3)
    data = bytearray(path.read_bytes())
    second = struct.unpack(">i", data[88:92])[0]  # frame 1's payload size gives frame 2's offset
    start = 92 + (second + 3) // 4 * 4
    at = start + offset
    data[at:at + 4] = struct.pack(">i", value)
    path.write_bytes(bytes(data))
    with pytest.raises(StructureError, match=f"frame 2 is corrupt \\({match}"):
        load_structure(path, top=CG_TRAJ)


def test_mapping_complete_refuses_atoms_the_other_side_lacks(capsys, tmp_path):
    heavy = ["N", "CA", "C", "O", "CB", "CG", "CD1", "CE1", "CD2", "CE2", "CZ", "OH"]
    beads = ["BB"] * 4 + ["SC1"] * 2 + ["SC2"] * 2 + ["SC3"] * 2 + ["SC4"] * 2

    def spec(names):
        path = tmp_path / "tyr.yaml"
        path.write_text(yaml.safe_dump({"molecule": "TYR", "atoms": dict(zip(names, beads + ["SC4"]))}))
        return path

    out = tmp_path / "done.yaml"
    _one_line_error(capsys, "mapping", "complete", spec(heavy[:-1] + ["OX"]), "-s", AA, "-o", out,
                    words=(str(AA), "TYR 59 chain A", "atom OH is not in mapping TYR"))
    _one_line_error(capsys, "mapping", "complete", spec(heavy + ["CX"]), "-s", AA, "-o", out,
                    words=(str(AA), "TYR 59 chain A", "has no atom CX of mapping TYR"))
    assert not out.exists()
    code, _, _ = _cli(capsys, "mapping", "complete", spec(heavy), "-s", AA, "-o", out)
    assert code == 0 and len(load_molecule_mapping(out).bonds) == 12


def test_reader_examples_hypothesis_missed(tmp_path):
    gro = TEXT[".gro"].splitlines()
    gro[0] = "title t= e"  # a time that is no number: frame index, as without a time
    assert load_structure(_write(tmp_path, "t.gro", "\n".join(gro) + "\n")).time[0] == 0
    cif = TEXT[".cif"].splitlines()
    atom = next(line for line in cif if line.startswith("ATOM"))
    second_model = atom[:-1] + "2"  # a model 2 with one atom
    with pytest.raises(StructureError, match="model 2 has 1 atoms but model 1 has 166"):
        load_structure(_write(tmp_path, "m.cif", "\n".join(cif + [second_model]) + "\n"))

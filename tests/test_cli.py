"""The ``herobm`` command end to end on real structures, including bad input."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mdtraj
import numpy as np
import yaml

from openmm_herobm.cli.main import main
from openmm_herobm.mapping import MappingSet, load_molecule_mapping

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
UBQ = ROOT / "examples" / "data" / "1ubq.pdb"
UBQ_CG = ROOT / "examples" / "data" / "1ubq_martinize2_cg.pdb"
VERMOUTH = DATA / "reference_mappings" / "vermouth_martini3001"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_console_script_and_help():
    exe = shutil.which("herobm")
    assert exe is not None, "the herobm console script is not installed"
    top = subprocess.run([exe, "--help"], capture_output=True, text=True)
    assert top.returncode == 0
    for command in ("map", "mapping", "backmap", "dataset", "train", "deploy", "evaluate", "ligand-params"):
        assert command in top.stdout
        sub = subprocess.run([exe, command, "--help"], capture_output=True, text=True)
        assert sub.returncode == 0 and "usage: herobm" in sub.stdout
    for sub in ("complete", "import", "check"):
        res = subprocess.run([exe, "mapping", sub, "--help"], capture_output=True, text=True)
        assert res.returncode == 0


def test_map_reproduces_martinize2(capsys, tmp_path):
    out = tmp_path / "cg.pdb"
    code, stdout, _ = run(capsys, "map", UBQ, "-m", "martini3", "-o", out)
    assert code == 0 and "166 beads" in stdout
    ours, ref = mdtraj.load(str(out)), mdtraj.load(str(UBQ_CG))
    assert [a.name for a in ours.topology.atoms] == [a.name for a in ref.topology.atoms]
    assert [r.name for r in ours.topology.residues] == [r.name for r in ref.topology.residues]
    rmsd = np.sqrt(((ours.xyz - ref.xyz) ** 2).sum(-1).mean()) * 10
    assert rmsd < 0.01  # Angstrom; martinize2 writes 3 decimals


def test_map_trajectory(capsys, tmp_path):
    ubq = mdtraj.load(str(UBQ))
    rng = np.random.default_rng(0)
    frames = ubq.xyz + rng.normal(0, 0.01, (3,) + ubq.xyz.shape[1:]).astype(np.float32)
    traj = mdtraj.Trajectory(frames, ubq.topology)
    traj.save_dcd(str(tmp_path / "aa.dcd"))
    code, _, _ = run(capsys, "map", UBQ, "-t", tmp_path / "aa.dcd", "-o", tmp_path / "cg.pdb",
                     "--traj-out", tmp_path / "cg.xtc")
    assert code == 0
    cg = mdtraj.load(str(tmp_path / "cg.xtc"), top=str(tmp_path / "cg.pdb"))
    assert cg.n_frames == 3 and cg.n_atoms == 166
    # frame 2 of the CG trajectory is the mapping of frame 2 of the all-atom one
    from openmm_herobm.mapping import SystemMapping

    system = SystemMapping.from_atomistic(ubq.topology, MappingSet.load("martini3"))
    assert np.abs(cg.xyz[2] - system.map(frames[2])).max() < 1e-3  # nm, xtc precision


def test_unknown_residue_fails_without_output(capsys, tmp_path):
    lines = UBQ.read_text().splitlines()
    het = "HETATM 9999  C1  LIG X   1      10.000  10.000  10.000  1.00  0.00           C"
    bad = tmp_path / "with_ligand.pdb"
    bad.write_text("\n".join([l for l in lines if l != "END"] + [het, "END"]) + "\n")
    out = tmp_path / "cg.pdb"
    code, _, err = run(capsys, "map", bad, "-o", out)
    assert code == 2 and "LIG" in err and "--unmapped drop" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [bad]
    code, _, err = run(capsys, "map", bad, "-o", out, "--unmapped", "drop")
    assert code == 0 and out.exists()


def test_bad_inputs_exit_2_with_one_line(capsys, tmp_path):
    nan = tmp_path / "nan.pdb"
    nan.write_text(UBQ.read_text().replace("  27.340  24.430   2.614", "     nan  24.430   2.614", 1))
    truncated = tmp_path / "cut.pdb"
    head = UBQ.read_text()[:3000].rsplit("\n", 1)[0]
    truncated.write_text(head[: head.rfind("\n") + 45] + "\n")  # last ATOM line cut inside its coordinates
    empty = tmp_path / "empty.pdb"
    empty.write_text("")
    cases = [
        (("map", tmp_path / "missing.pdb", "-o", tmp_path / "o.pdb"), "not found"),
        (("map", UBQ, "-o", tmp_path / "o.xyz"), "supported"),
        (("map", nan, "-o", tmp_path / "o.pdb"), "nan.pdb"),
        (("map", truncated, "-o", tmp_path / "o.pdb"), "cut.pdb"),
        (("map", empty, "-o", tmp_path / "o.pdb"), "empty.pdb"),
        (("map", UBQ, "-m", "no_such_set", "-o", tmp_path / "o.pdb"), "no_such_set"),
        (("backmap", UBQ_CG, "--model", tmp_path / "nope.pt", "-o", tmp_path / "o.pdb"), "nope.pt"),
        (("evaluate", UBQ, tmp_path / "missing.pdb"), "missing.pdb"),
    ]
    for args, expected in cases:
        code, _, err = run(capsys, *args)
        assert code == 2, (args, err)
        # stage messages ("herobm: 12:00:01 model ...") may come first; one line says what went wrong
        lines = [x for x in err.strip().splitlines() if not re.match(r"herobm: \d\d:\d\d:\d\d ", x)]
        assert expected in err and len(lines) == 1 and lines[0].startswith("herobm: error:"), (args, err)
    assert not (tmp_path / "o.pdb").exists() and not (tmp_path / "o.xyz").exists()


def test_mapping_import_matches_shipped_set(capsys, tmp_path):
    out = tmp_path / "PHE.yaml"
    code, _, _ = run(capsys, "mapping", "import", VERMOUTH / "phe.charmm36.map", "-o", out)
    assert code == 0
    imported = load_molecule_mapping(out)
    shipped = MappingSet.load("martini3").for_residue("PHE")
    assert imported.beads == shipped.beads
    w_imp, w_ship = imported.bead_weights(), shipped.bead_weights()
    names_ship = [a.name for a in shipped.atoms]
    for i, atom in enumerate(imported.atoms):  # CHARMM names; compare heavy atoms by PDB alias
        if atom.is_hydrogen:
            continue
        j = next(k for k, a in enumerate(shipped.atoms) if atom.name in a.names)
        assert np.allclose(w_imp[:, i], w_ship[:, j]), (atom.name, names_ship[j])


def test_mapping_complete_from_structure(capsys, tmp_path):
    """A user lists atoms per bead for a new molecule; the hierarchy is assigned from a structure."""
    spec = {"molecule": "TYR", "atoms": {n: b for n, b in [
        ("N", "BB"), ("CA", "BB"), ("C", "BB"), ("O", "BB"), ("CB", "SC1"), ("CG", "SC1"),
        ("CD1", "SC2"), ("CE1", "SC2"), ("CD2", "SC3"), ("CE2", "SC3"), ("CZ", "SC4"), ("OH", "SC4")]}}
    src = tmp_path / "tyr.yaml"
    src.write_text(yaml.safe_dump(spec))
    out = tmp_path / "tyr_done.yaml"
    code, _, _ = run(capsys, "mapping", "complete", src, "-s", UBQ, "-o", out)
    assert code == 0
    done = load_molecule_mapping(out)
    assert all(a.reconstructed for a in done.atoms)
    assert len(done.bonds) == 12  # 12 intra-residue heavy bonds of TYR, from 1UBQ's Tyr59
    code, stdout, _ = run(capsys, "mapping", "check", out)
    assert code == 0 and "TYR" in stdout


def test_evaluate_json(capsys, tmp_path):
    out = tmp_path / "report.json"
    code, stdout, _ = run(capsys, "evaluate", UBQ, UBQ, "--json", out)
    assert code == 0 and "rmsd_heavy" in stdout
    report = json.loads(out.read_text())
    assert report["rmsd_heavy"] == 0.0 and report["chirality_errors_ca"] == 0


def test_python_entry_point():
    res = subprocess.run([sys.executable, "-m", "openmm_herobm.cli.main", "mapping", "check", "ca"],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "ca" in res.stdout


def test_ligand_params_errors_are_one_line(tmp_path, capsys):
    from openmm_herobm.cli.main import main

    assert main(["ligand-params", str(tmp_path / "missing.sdf"), "--name", "LIG", "-o", str(tmp_path / "x.xml")]) == 2
    assert "no such file" in capsys.readouterr().err
    bad = tmp_path / "lig.txt"
    bad.write_text("not a molecule")
    assert main(["ligand-params", str(bad), "--name", "LIG", "-o", str(tmp_path / "x.xml")]) == 2
    assert ".sdf, .mol, .mol2 or .pdb" in capsys.readouterr().err
    assert not (tmp_path / "x.xml").exists()

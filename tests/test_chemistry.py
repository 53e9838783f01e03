"""One home per fact: openmm_herobm.chemistry (names, tables, thresholds) and openmm_herobm.geometry
(numpy, with torch twins in geometry_torch), checked against mdtraj on real structures."""

import ast
import gzip
import subprocess
import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from openmm_herobm import chemistry as chem
from openmm_herobm import geometry as geo
from openmm_herobm import geometry_torch as geo_t

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "openmm_herobm"
UBQ = ROOT / "examples" / "data" / "1ubq.pdb"
DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="module")
def ubq():
    traj = mdtraj.load(str(UBQ))
    return traj.atom_slice(traj.topology.select("protein and not element H"))


def _quads(traj) -> np.ndarray:
    """Every backbone and side-chain dihedral of the structure (phi, psi, omega, chi1-4)."""
    kinds = (mdtraj.compute_phi, mdtraj.compute_psi, mdtraj.compute_omega,
             mdtraj.compute_chi1, mdtraj.compute_chi2, mdtraj.compute_chi3, mdtraj.compute_chi4)
    return np.concatenate([kind(traj)[0] for kind in kinds])


def _residue_atoms(traj, names):
    """(n, len(names)) atom indices of the residues that have all ``names``."""
    rows = []
    for res in traj.topology.residues:
        at = {a.name: a.index for a in res.atoms}
        if all(n in at for n in names):
            rows.append([at[n] for n in names])
    return np.array(rows)


def _wrapped(a):
    return (a + np.pi) % (2 * np.pi) - np.pi


def test_dihedral_and_angle_agree_with_mdtraj(ubq):
    quads = _quads(ubq)
    assert len(quads) > 300
    x = ubq.xyz[0].astype(np.float64)
    ours = geo.dihedral(*(x[quads[:, k]] for k in range(4)))
    theirs = mdtraj.compute_dihedrals(ubq, quads)[0]  # float32
    assert np.abs(_wrapped(ours - theirs)).max() < 1e-4
    # the bond-vector form is the same function
    b = [x[quads[:, k + 1]] - x[quads[:, k]] for k in range(3)]
    np.testing.assert_array_equal(geo.dihedral_of(*b), ours)

    bonds = np.array([(a.index, b.index) for a, b in ubq.topology.bonds])
    triples = np.array([(i, j, k) for (i, j) in bonds for (jj, k) in bonds if jj == j and k != i]
                       + [(i, j, k) for (j, i) in bonds for (jj, k) in bonds if jj == j and k != i])
    assert len(triples) > 500
    ours = geo.angle(*(x[triples[:, k]] for k in range(3)))
    np.testing.assert_allclose(ours, mdtraj.compute_angles(ubq, triples)[0], atol=1e-4)
    assert 1.6 < ours.min() and ours.max() < 2.5  # real bond angles (radians): 92-143 deg


def test_torch_twins_agree_with_numpy(ubq):
    x = ubq.xyz[0].astype(np.float64) * 10.0
    quads = _quads(ubq)
    p = [x[quads[:, k]] for k in range(4)]
    t = [torch.as_tensor(v) for v in p]
    np.testing.assert_allclose(geo_t.dihedral(*t).numpy(), geo.dihedral(*p), atol=1e-10)
    np.testing.assert_allclose(geo_t.angle(*t[:3]).numpy(), geo.angle(*p[:3]), atol=1e-10)
    np.testing.assert_allclose(geo_t.signed_volume(*t).numpy(), geo.signed_volume(*p), rtol=1e-12, atol=1e-12)
    n, ca, c = (x[_residue_atoms(ubq, ("N", "CA", "C"))[:, k]] for k in range(3))
    cb = geo_t.ideal_cb(*(torch.as_tensor(v) for v in (n, ca, c))).numpy()
    np.testing.assert_allclose(cb, geo.ideal_cb(n, ca, c), atol=1e-12)


def test_ideal_cb_lands_on_the_real_cb_and_has_the_l_sign(ubq):
    idx = _residue_atoms(ubq, ("N", "CA", "C", "CB"))
    assert len(idx) == sum(r.name != "GLY" for r in ubq.topology.residues) == 70
    x = ubq.xyz[0].astype(np.float64) * 10.0  # A
    n, ca, c, cb = (x[idx[:, k]] for k in range(4))
    ideal = geo.ideal_cb(n, ca, c)
    miss = np.linalg.norm(ideal - cb, axis=1)
    assert np.median(miss) < 0.15 and miss.max() < 0.4  # 1UBQ (1.8 A): median 0.12, max 0.35
    # the same construction in nm
    np.testing.assert_allclose(geo.ideal_cb(n / 10, ca / 10, c / 10, unit=10.0), ideal / 10, atol=1e-12)
    # CHIRALITY_CHECKS' CA centre: every real residue and the ideal CB have the L sign, a mirror image has not
    (_, centre, a, b, d, sign) = chem.CHIRALITY_CHECKS["ca"]
    assert (centre, a, b, d) == ("CA", "N", "C", "CB")
    assert (sign * geo.signed_volume(ca, n, c, cb) > 0).all()
    assert (sign * geo.signed_volume(ca, n, c, ideal) > 0).all()
    mirror = x * np.array([1.0, 1.0, -1.0])
    n, ca, c, cb = (mirror[idx[:, k]] for k in range(4))
    assert (sign * geo.signed_volume(ca, n, c, cb) < 0).all()


def test_disulfide_pairs_match_mdtraj_on_a_real_chain(tmp_path):
    path = next(iter(sorted((DATA / "proteins" / "test").glob("*1XU1*.pdb.gz"))))
    plain = tmp_path / path.name[:-3]
    with gzip.open(path) as fh:
        plain.write_bytes(fh.read())
    traj = mdtraj.load(str(plain))
    sg = np.array([a.index for a in traj.topology.atoms if a.name == "SG" and a.residue.name == "CYS"])
    i, j = geo.disulfide_pairs(traj.xyz[0][sg].astype(np.float64) * 10.0)
    ours = {tuple(sorted(p)) for p in zip(sg[i], sg[j])}
    top = traj.topology.copy()
    top.create_disulfide_bonds(traj.xyz[0])
    theirs = {tuple(sorted((a.index, b.index))) for a, b in top.bonds if a.name == b.name == "SG"}
    assert len(ours) == 3 and ours == theirs


def test_name_tables_fit_together():
    assert len(chem.AMINO_ACIDS) == 20 and set(chem.VARIANT_STANDARD.values()) <= chem.AMINO_ACIDS
    assert set(chem.MODELLER_VARIANT) == set(chem.VARIANT_STANDARD)
    assert chem.standard_residue("HSD") == "HIS" and chem.standard_residue("MSE") == "MSE"
    assert {chem.forcefield_residue(n) for n in chem.CHOLESTEROL} == {"CHL1"}
    assert chem.forcefield_residue("HIS") == "HIS" and chem.forcefield_residue("POPC") == "POPC"
    for key in chem.PROTEIN_CENTRES:
        assert set(chem.CHIRALITY_CHECKS[key][0]) <= chem.AMINO_ACIDS - {"GLY"}
    assert not set(chem.WATER_BEADS) & set(chem.ION_BEADS)


def test_chemistry_imports_nothing_heavy():
    code = ("import sys, openmm_herobm.chemistry; "
            "print(sorted(m for m in ('numpy', 'torch', 'mdtraj', 'openmm', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""}, cwd=ROOT)
    assert out.stdout.strip() == "[]"
    imports = [n for n in ast.walk(ast.parse((PACKAGE / "geometry.py").read_text()))
               if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not any("torch" in ast.unparse(n) for n in imports)  # the numpy module stays torch-free


# ---------------------------------------------------------------------------- one variant table

def _variant_tables(source: str) -> list[int]:
    """Line numbers of dict literals or ``dict.fromkeys(...)`` calls that map two or more variant
    names (HID, HSD, CYX, ...) to standard amino acids: copies of chemistry.VARIANT_STANDARD."""
    variants = set(chem.VARIANT_STANDARD)

    def text(node):
        return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            pairs = [(text(k), text(v)) for k, v in zip(node.keys, node.values) if k is not None]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "fromkeys"
              and len(node.args) == 2 and isinstance(node.args[0], (ast.Tuple, ast.List, ast.Set))):
            pairs = [(text(k), text(node.args[1])) for k in node.args[0].elts]
        else:
            continue
        if sum(k in variants and v in chem.AMINO_ACIDS for k, v in pairs) >= 2:
            found.append(node.lineno)
    return found


def test_the_variant_table_has_one_home():
    found = {str(path.relative_to(ROOT)): lines for path in sorted(PACKAGE.rglob("*.py"))
             if (lines := _variant_tables(path.read_text()))}
    assert list(found) == ["openmm_herobm/chemistry.py"] and len(found["openmm_herobm/chemistry.py"]) == 1, found


def test_the_variant_scan_finds_a_copy():
    assert _variant_tables('NAMES = {"HID": "HIS", "CYX": "CYS", "FOO": "BAR"}') == [1]
    assert _variant_tables('X = {**dict.fromkeys(("HSD", "HSE"), "HIS")}') == [1]
    assert _variant_tables('MODELLER = {"HSD": "HID", "HSE": "HIE"}') == []  # variant -> variant is another fact

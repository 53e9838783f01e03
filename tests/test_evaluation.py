"""Tests of the evaluation yardstick on real structures from /work/shared/data."""

import json
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest

from openmm_herobm.errors import HeroBMError
from openmm_herobm.evaluation import evaluate, evaluate_files, format_report
from openmm_herobm.evaluation.metrics import _load

DATA = Path("/work/shared/data")
CHAIN = DATA / "proteins/test/pb_7KM8_WPD_A.pdb.gz"  # 1 cis non-Pro (GLY 102), 1 cis Pro (PRO 58)
WITH_H = DATA / "martinize2_pairs/tier-1_1mj5/aa.pdb"
LIPIDS = DATA / "lipids/charmm36_POPCchol-0pct.gro.gz"  # some POPC cut by the periodic box

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared data not available")


@pytest.fixture(scope="module")
def chain():
    return _load(CHAIN)


def _copy(traj, xyz_nm):
    return md.Trajectory(xyz_nm[None].astype(np.float32), traj.topology)


def _atoms(traj, resid, name):
    return traj.topology.select(f"resid {resid} and name {name}")[0]


def _n_complete(traj, resname, names):
    """Residues named `resname` that have all atoms `names`."""
    return sum(1 for res in traj.topology.residues
               if res.name == resname and names <= {a.name for a in res.atoms})


def _independent_cis(traj):
    """Cis peptide count computed with mdtraj, independently of the module."""
    idx, omega = md.compute_omega(traj)
    cn = np.linalg.norm(traj.xyz[0, idx[:, 2]] - traj.xyz[0, idx[:, 1]], axis=1)
    cis = (np.abs(np.degrees(omega[0])) < 30) & (cn < 0.2)
    nxt = np.array([traj.topology.atom(i).residue.name == "PRO" for i in idx[:, 2]])
    return int((cis & ~nxt).sum()), int((cis & nxt).sum())


def test_self_comparison(chain):
    r = evaluate(chain, chain)
    heavy = sum(a.element.symbol != "H" for a in chain.topology.atoms)
    assert r["n_atoms_compared"] == heavy
    assert r["n_unmatched_pred"] == r["n_unmatched_ref"] == 0
    for k in ("rmsd_heavy", "rmsd_backbone", "rmsd_sidechain", "bond_length_mae", "bond_angle_mae"):
        assert r[k] == pytest.approx(0.0, abs=1e-6), k
    assert all(v == pytest.approx(0.0, abs=1e-6) for v in r["rmsd_sidechain_per_residue_type"].values())
    assert r["chirality_errors_ca"] == r["chirality_errors_ile_cb"] == r["chirality_errors_thr_cb"] == 0
    assert r["chirality_checked"]["ca"] == sum(
        _n_complete(chain, n, {"N", "CA", "C", "CB"}) for n in {r.name for r in chain.topology.residues} - {"GLY"})
    assert (r["cis_peptides_nonpro"], r["cis_peptides_pro"]) == _independent_cis(chain) == (1, 1)
    assert sorted(r["cis_peptide_residues"]) == ["GLY 102 A", "PRO 58 A"]
    assert r["cis_peptides_nonpro_in_ref"] == 1
    assert r["n_bonds_out_of_range"] == 0 and r["n_clashes"] == 0 and r["n_close_contacts"] == 0
    json.dumps(r)  # JSON-serialisable
    text = format_report(r)
    assert "rmsd_backbone" in text and "GLY 102 A" in text


def test_no_reference_reports_geometry_only(chain):
    r = evaluate(chain)
    assert "rmsd_heavy" not in r and "bond_length_mae" not in r
    assert r["n_bonds"] > r["n_atoms_pred_heavy"] * 0.9
    assert r["chirality_errors_ca"] == 0 and r["cis_peptides_nonpro"] == 1


def test_mirror_image_flips_every_centre(chain):
    xyz = chain.xyz[0].copy()
    xyz[:, 0] *= -1
    r = evaluate(_copy(chain, xyz), chain)
    n_ile = _n_complete(chain, "ILE", {"CA", "CB", "CG1", "CG2"})
    n_thr = _n_complete(chain, "THR", {"CA", "CB", "OG1", "CG2"})
    assert n_ile > 3 and n_thr > 3
    assert r["chirality_errors_ca"] == r["chirality_checked"]["ca"] > 100
    assert r["chirality_errors_ile_cb"] == n_ile == r["chirality_checked"]["ile_cb"]
    assert r["chirality_errors_thr_cb"] == n_thr == r["chirality_checked"]["thr_cb"]
    assert r["chirality_errors_in_ref"] == {"ca": 0, "ile_cb": 0, "thr_cb": 0}
    # a reflection keeps every distance and angle: only chirality can see it
    assert r["bond_length_mae"] == pytest.approx(0, abs=1e-4)
    assert r["bond_angle_mae"] == pytest.approx(0, abs=1e-2)
    assert r["rmsd_heavy"] > 1.0
    assert r["cis_peptides_nonpro"] == 1


def test_reflected_cb_gives_one_ca_error(chain):
    res = [r for r in chain.topology.residues if r.name not in ("GLY", "ILE", "THR")][20]
    x = chain.xyz[0].astype(np.float64).copy()
    n, ca, c, cb = (_atoms(chain, res.index, nm) for nm in ("N", "CA", "C", "CB"))
    normal = np.cross(x[n] - x[ca], x[c] - x[ca])
    normal /= np.linalg.norm(normal)
    x[cb] -= 2 * np.dot(x[cb] - x[ca], normal) * normal  # mirror CB through the N-CA-C plane
    r = evaluate(_copy(chain, x), chain)
    label = f"{res.name} {res.resSeq} A"
    assert r["chirality_errors_ca"] == 1
    assert r["chirality_error_residues"]["ca"] == [label]
    assert r["chirality_errors_ile_cb"] == r["chirality_errors_thr_cb"] == 0
    assert r["chirality_errors_in_ref"]["ca"] == 0


def test_sidechain_shift(chain):
    x = chain.xyz[0].copy()
    sc = chain.topology.select("not name N CA C O OXT")
    x[sc] += np.array([0.03, 0.04, 0.0])  # 0.05 nm = 0.5 A
    r = evaluate(_copy(chain, x), chain)
    assert r["rmsd_backbone"] == pytest.approx(0.0, abs=1e-6)
    assert r["rmsd_sidechain"] == pytest.approx(0.5, abs=1e-3)
    assert all(v == pytest.approx(0.5, abs=1e-3) for v in r["rmsd_sidechain_per_residue_type"].values())
    assert "GLY" not in r["rmsd_sidechain_per_residue_type"]
    assert 0.0 < r["rmsd_heavy"] < 0.5
    assert r["bond_length_mae"] > 0.0  # the CA-CB bonds are stretched


def _rotate_about(x, moving, origin, axis, angle):
    axis = axis / np.linalg.norm(axis)
    p = x[moving] - origin
    cos, sin = np.cos(angle), np.sin(angle)
    rot = p * cos + np.cross(axis, p) * sin + np.outer(p @ axis, axis) * (1 - cos)
    x[moving] = rot + origin


def test_omega_rotated_to_cis(chain):
    top = chain.topology
    i = 60  # residue i -> i+1, both non-Pro, trans in the reference
    assert top.residue(i + 1).name != "PRO"
    x = chain.xyz[0].astype(np.float64).copy()
    c, n = _atoms(chain, i, "C"), _atoms(chain, i + 1, "N")
    moving = top.select(f"resid > {i}")
    _rotate_about(x, moving, x[c], x[n] - x[c], np.pi)
    r = evaluate(_copy(chain, x), chain)
    label = f"{top.residue(i + 1).name} {top.residue(i + 1).resSeq} A"
    assert r["cis_peptides_nonpro"] == 2
    assert label in r["cis_peptide_residues"]
    assert r["cis_peptides_nonpro_in_ref"] == 1
    assert r["chirality_errors_ca"] == 0  # a rigid rotation keeps every centre
    assert r["n_bonds_out_of_range"] == 0


def test_stretched_peptide_bond_is_still_a_bond(chain):
    # C(i)-N(i+1) moved to ~2.5 A: it is a chain break in pred, but a bond in ref
    i = 40
    x = chain.xyz[0].astype(np.float64).copy()
    c, n = _atoms(chain, i, "C"), _atoms(chain, i + 1, "N")
    d = x[n] - x[c]
    x[chain.topology.select(f"resid > {i}")] += d / np.linalg.norm(d) * 0.12
    r = evaluate(_copy(chain, x), chain)
    res = chain.topology.residue(i)
    assert r["n_bonds_out_of_range"] == 1
    assert r["bonds_out_of_range"][0].startswith(f"{res.name} {res.resSeq} A C - ")
    assert evaluate(_copy(chain, x))["n_bonds_out_of_range"] == 0  # without ref: a break


def test_clash_detected(chain):
    top = chain.topology
    x = chain.xyz[0].copy()
    a, b = _atoms(chain, 10, "CA"), _atoms(chain, 100, "CA")
    far = np.linalg.norm(x[a] - x[b])
    assert far > 0.5
    # move all of residue 100 so that its CA lies 1.5 A from CA of residue 10
    shift = x[a] + np.array([0.15, 0, 0]) - x[b]
    x[top.select("resid 100")] += shift
    r = evaluate(_copy(chain, x), chain)
    assert r["n_clashes"] >= 1 and r["n_close_contacts"] >= 1
    assert r["n_clashes_in_ref"] == 0
    lab10, lab100 = (f"{top.residue(k).name} {top.residue(k).resSeq} A" for k in (10, 100))
    assert any(lab10 in p and lab100 in p for p in r["clash_pairs"])


def _reordered(traj, seed=0):
    """Same atoms, shuffled inside each residue, with a fresh topology (no bonds)."""
    rng = np.random.default_rng(seed)
    top = md.Topology()
    order = []
    for ch in traj.topology.chains:
        c = top.add_chain()
        for res in ch.residues:
            r = top.add_residue(res.name, c, res.resSeq)
            atoms = list(res.atoms)
            for k in rng.permutation(len(atoms)):
                top.add_atom(atoms[k].name, atoms[k].element, r)
                order.append(atoms[k].index)
    return md.Trajectory(traj.xyz[:, order], top)


def test_atom_order_does_not_matter(chain):
    x = chain.xyz[0].copy()
    x += np.random.default_rng(1).normal(scale=0.02, size=x.shape)  # ~0.35 A noise
    noisy = _copy(chain, x)
    a = evaluate(noisy, chain)
    b = evaluate(_reordered(noisy), chain)
    assert b["n_atoms_compared"] == a["n_atoms_compared"]
    for k in ("rmsd_heavy", "rmsd_backbone", "rmsd_sidechain"):
        assert b[k] == pytest.approx(a[k], rel=1e-6)
    for k in ("n_bonds", "n_angles", "n_clashes", "chirality_errors_ca", "cis_peptides_nonpro"):
        assert b[k] == a[k], k


def test_hydrogens_ignored_and_names_aliased():
    ref = md.load(str(WITH_H))
    heavy = ref.topology.select("not element H")
    assert len(heavy) < ref.n_atoms
    pred = ref.atom_slice(heavy)
    r = evaluate(pred, ref)
    assert r["n_atoms_compared"] == len(heavy)
    assert r["n_unmatched_pred"] == r["n_unmatched_ref"] == 0
    assert r["rmsd_heavy"] == pytest.approx(0.0, abs=1e-6)
    assert r["cis_peptides_pro"] == r["cis_peptides_pro_in_ref"]
    # force-field naming: HIS -> HIE, ILE CD1 -> CD, O -> OT1 at the C-terminus
    renamed = pred[:]
    renamed.topology = pred.topology.copy()
    for res in renamed.topology.residues:
        if res.name == "HIS":
            res.name = "HIE"
        for atom in res.atoms:
            if res.name == "ILE" and atom.name == "CD1":
                atom.name = "CD"
    last = list(renamed.topology.residues)[-1]
    for atom in last.atoms:
        atom.name = {"O": "OT1", "OXT": "OT2"}.get(atom.name, atom.name)
    r2 = evaluate(renamed, ref)
    assert r2["n_atoms_compared"] == len(heavy) and r2["n_unmatched_pred"] == 0
    assert r2["chirality_checked"] == r["chirality_checked"]


def test_lipid_bilayer_across_periodic_box():
    r = evaluate_files(LIPIDS, LIPIDS)
    assert r["n_atoms_compared"] == r["n_atoms_pred_heavy"] > 5000
    assert r["rmsd_heavy"] == 0.0 and r["rmsd_backbone"] is None
    assert r["n_bonds_out_of_range"] == 0 and r["n_clashes"] == 0
    # 128 POPC, 52 heavy atoms each, acyclic: 51 bonds each, some across the box
    assert r["n_bonds"] == 128 * 51


def test_user_errors():
    with pytest.raises(HeroBMError, match="not found"):
        evaluate_files(DATA / "no_such_file.pdb")
    with pytest.raises(HeroBMError, match="no heavy atoms in common") as exc:
        evaluate_files(LIPIDS, CHAIN)  # a bilayer against a protein chain
    assert str(CHAIN) in str(exc.value) and str(LIPIDS) in str(exc.value)
    assert "\n" not in str(exc.value)


def test_one_four_pairs_are_close_contacts_not_clashes(chain):
    # pull LEU CG to 1.9 A of its own N: N-CA-CB-CG is a 1-4 pair
    res = [r for r in chain.topology.residues if r.name == "LEU"][3]
    x = chain.xyz[0].astype(np.float64).copy()
    n, cg = _atoms(chain, res.index, "N"), _atoms(chain, res.index, "CG")
    u = (x[cg] - x[n]) / np.linalg.norm(x[cg] - x[n])
    x[cg] = x[n] + 0.19 * u
    r = evaluate(_copy(chain, x), chain)
    label = f"LEU {res.resSeq} A"
    assert r["n_close_contacts"] >= 1
    assert not any(f"{label} N - {label} CG" in p or f"{label} CG - {label} N" in p for p in r["clash_pairs"])


PHE_RING = ("CG", "CD1", "CE1", "CZ", "CE2", "CD2")
TRP_5_RING = ("CG", "CD1", "NE1", "CE2", "CD2")


def _place_bond_through_ring(traj, ring_res, ring_names, bond_res, bond_names, offset=0.0, tilt=0.0):
    """Coordinates (nm) with the bond's two atoms placed across the ring's plane.

    The bond is centred on the ring centre moved by ``offset`` nm within the plane (towards
    the first ring atom) and runs along the ring normal tilted by ``tilt`` towards it; its
    first atom stays on the side of the plane where it was (with the rest of its residue).
    """
    x = traj.xyz[0].astype(np.float64).copy()
    ring = x[[_atoms(traj, ring_res.index, nm) for nm in ring_names]]
    centre = ring.mean(0)
    normal = np.linalg.svd(ring - centre)[2][2]
    a, b = (_atoms(traj, bond_res.index, nm) for nm in bond_names)
    if np.dot(x[a] - centre, normal) > 0:
        normal = -normal
    u = ring[0] - centre
    u -= np.dot(u, normal) * normal
    u /= np.linalg.norm(u)
    mid = centre + offset * u
    axis = np.cos(tilt) * normal + np.sin(tilt) * u
    x[a], x[b] = mid - 0.075 * axis, mid + 0.075 * axis  # a 1.5 A bond
    return x


def test_pierced_rings(chain):
    top = chain.topology
    r0 = evaluate(chain, chain)
    assert r0["n_pierced_rings"] == 0 and r0["pierced_rings"] == []
    phe = next(r for r in top.residues if r.name == "PHE")
    lys = next(r for r in top.residues if r.name == "LYS")
    x = _place_bond_through_ring(chain, phe, PHE_RING, lys, ("CE", "NZ"))
    label = f"PHE {phe.resSeq} A: LYS {lys.resSeq} A CE - LYS {lys.resSeq} A NZ"
    for r in (evaluate(_copy(chain, x), chain), evaluate(_copy(chain, x))):
        assert r["n_pierced_rings"] == 1
        assert r["pierced_rings"] == [label]
    # a bond slanted 50 degrees, still crossing inside the ring (0.8 A off centre), is a piercing
    x = _place_bond_through_ring(chain, phe, PHE_RING, lys, ("CE", "NZ"), offset=0.08, tilt=np.radians(50))
    assert evaluate(_copy(chain, x))["pierced_rings"] == [label]
    # crossing the plane outside the ring (2.2 A from its centre, radius 1.4 A): not a piercing
    x = _place_bond_through_ring(chain, phe, PHE_RING, lys, ("CE", "NZ"), offset=0.22)
    assert evaluate(_copy(chain, x))["n_pierced_rings"] == 0
    # lying in the ring plane above the centre (does not cross the plane): not a piercing
    x = _place_bond_through_ring(chain, phe, PHE_RING, lys, ("CE", "NZ"), tilt=np.pi / 2)
    x[[_atoms(chain, lys.index, nm) for nm in ("CE", "NZ")]] += 0.1 * np.linalg.svd(
        chain.xyz[0][[_atoms(chain, phe.index, nm) for nm in PHE_RING]]
        - chain.xyz[0][[_atoms(chain, phe.index, nm) for nm in PHE_RING]].mean(0))[2][2]
    assert evaluate(_copy(chain, x))["n_pierced_rings"] == 0
    # the five-membered ring of TRP, pierced by an ARG bond, is labelled as such
    trp = [r for r in top.residues if r.name == "TRP"][2]
    arg = [r for r in top.residues if r.name == "ARG"][5]
    x = _place_bond_through_ring(chain, trp, TRP_5_RING, arg, ("CZ", "NH1"))
    r = evaluate(_copy(chain, x), chain)
    assert r["pierced_rings"] == [f"TRP {trp.resSeq} A (5-ring): ARG {arg.resSeq} A CZ - ARG {arg.resSeq} A NH1"]

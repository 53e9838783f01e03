"""Lipids on real data: stereo checks, their repair, the shipped lipid model and whole Martini 3 frames.

References: the NMRLipids CHARMM36 POPC/cholesterol bilayer (held out of the lipid model's
training) and a real Martini 3 membrane built with mstool (POPC and CHOL among six lipids
we have no model for, W water, ions).  Thresholds come from BENCHMARKS.md with a margin.
"""

import gzip
from pathlib import Path

import mdtraj
import numpy as np
import pytest

import openmm_herobm as hb
from openmm_herobm.cli.main import main
from openmm_herobm.io import load_structure, make_whole
from openmm_herobm.pipeline.chirality import repair_molecule_stereo

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
BILAYER = DATA / "lipids" / "charmm36_POPCchol-20pct.gro.gz"
MEMBRANE = DATA / "cg_real" / "mstool_mix8_419lipids.gro.gz"
STEREO_KEYS = ("chirality_errors_popc_c2", "chirality_errors_chol_c3", "chirality_errors_chol_c8",
               "chirality_errors_chol_c9", "chirality_errors_chol_c10", "chirality_errors_chol_c13",
               "chirality_errors_chol_c14", "chirality_errors_chol_c17", "chirality_errors_chol_c20",
               "double_bond_errors_popc_oleoyl_c9", "double_bond_errors_chol_c5")


@pytest.fixture(scope="module")
def bilayer():
    """Heavy atoms of the held-out bilayer (100 POPC, 24 CHL), molecules whole, no box
    (this snapshot's box does not match its atoms: periodic images would overlap)."""
    traj = make_whole(load_structure(str(BILAYER)))
    traj = traj.atom_slice([a.index for a in traj.topology.atoms
                            if a.residue.name in ("POPC", "CHL") and a.element.symbol != "H"])
    traj.unitcell_vectors = None
    return traj


def stereo_errors(result):
    return {k: result[k] for k in STEREO_KEYS if result.get(k)}


def test_reference_bilayer_has_every_lipid_centre_right(bilayer):
    result = hb.evaluate(bilayer)
    assert result["chirality_checked"]["popc_c2"] == 100 and result["chirality_checked"]["chol_c13"] == 24
    assert stereo_errors(result) == {}
    assert result["n_pierced_rings"] == 0


def test_inverted_centres_and_trans_double_bonds_are_found_and_repaired(bilayer):
    xyz = bilayer.xyz[0].astype(np.float64).copy()
    top = bilayer.topology
    popc = [r for r in top.residues if r.name == "POPC"][:3]
    chol = [r for r in top.residues if r.name == "CHL"][:2]
    for r in popc:  # invert C2 through its neighbours' plane, rotate the oleoyl C211 to trans
        a = {x.name: x.index for x in r.atoms}
        p0, p1, p2 = xyz[a["O21"]], xyz[a["C1"]], xyz[a["C3"]]
        n = np.cross(p1 - p0, p2 - p0)
        n /= np.linalg.norm(n)
        xyz[a["C2"]] -= 2 * np.dot(xyz[a["C2"]] - p0, n) * n
        b, c = xyz[a["C29"]], xyz[a["C210"]]
        axis = (c - b) / np.linalg.norm(c - b)
        v = xyz[a["C211"]] - c
        xyz[a["C211"]] = c + 2 * np.dot(v, axis) * axis - v  # 180 deg about C29=C210
    for r in chol:
        a = {x.name: x.index for x in r.atoms}
        p0, p1, p2 = xyz[a["C12"]], xyz[a["C17"]], xyz[a["C18"]]
        n = np.cross(p1 - p0, p2 - p0)
        n /= np.linalg.norm(n)
        xyz[a["C13"]] -= 2 * np.dot(xyz[a["C13"]] - p0, n) * n
    broken = mdtraj.Trajectory(xyz[None].astype(np.float32), top)
    found = stereo_errors(hb.evaluate(broken))
    assert found == {"chirality_errors_popc_c2": 3, "double_bond_errors_popc_oleoyl_c9": 3,
                     "chirality_errors_chol_c13": 2}
    fixed, counts = repair_molecule_stereo(top.to_openmm(), xyz / 1.0)
    assert counts == {"popc_c2": 3, "popc_oleoyl_c9": 3, "chol_c13": 2}
    repaired = mdtraj.Trajectory(fixed[None].astype(np.float32), top)
    assert stereo_errors(hb.evaluate(repaired)) == {}


def test_cholesterol_under_its_force_field_names_maps_like_chl(bilayer):
    """CHARMM36/CHARMM-GUI call cholesterol CHL1 (what the backmap writes), GROMACS setups often
    CHOL: both map with the CHL mapping, to the same beads."""
    chol = [r.index for r in bilayer.topology.residues if r.name == "CHL"][:3]
    patch = bilayer.atom_slice([a.index for r in chol for a in bilayer.topology.residue(r).atoms])
    reference = hb.map_structure(patch, "martini3_lipids").cg
    for name in ("CHL1", "CHOL"):
        renamed = patch[:]
        for residue in renamed.topology.residues:
            residue.name = name
        cg = hb.map_structure(renamed, "martini3_lipids").cg
        assert [r.name for r in cg.topology.residues] == ["CHOL"] * 3
        assert np.array_equal(cg.xyz, reference.xyz)


def test_shipped_lipid_model_on_the_held_out_bilayer(bilayer):
    mapped = hb.map_structure(bilayer, "martini3_lipids")
    result = hb.backmap(mapped.cg)  # no model named: the shipped lipid model is chosen
    assert result.model.path.name == "martini3_lipids.pt"
    report = hb.evaluate(result.trajectory, bilayer)
    per_type = report["rmsd_heavy_per_residue_type"]
    # measured: CHL 0.59 A, POPC 1.22 A (BENCHMARKS.md)
    assert per_type["CHL"] < 0.8 and per_type["POPC"] < 1.4


def test_lipid_patch_refined_with_charmm36_has_zero_stereo_errors(bilayer, tmp_path):
    """Pipeline on 12 lipids of the held-out bilayer: CHARMM36, hydrogens from its templates, guards."""
    keep = [r.index for r in bilayer.topology.residues if r.name == "CHL"][:4] + \
        [r.index for r in bilayer.topology.residues if r.name == "POPC"][:8]
    patch = bilayer.atom_slice([a.index for r in keep for a in bilayer.topology.residue(r).atoms])
    cg = hb.map_structure(patch, "martini3_lipids").cg
    out = tmp_path / "patch.pdb"
    result = hb.backmap_and_simulate(cg, "martini3_lipids", solvent=None, output=out)
    assert result.report["forcefield"] == "charmm36.xml"
    heavy = result.trajectory.atom_slice(result.trajectory.topology.select("not element H"))
    report = hb.evaluate(heavy)
    assert stereo_errors(report) == {} and report["n_close_contacts"] == 0 and report["n_pierced_rings"] == 0
    assert result.energies["minimized"] < result.energies["initial"]
    assert heavy.topology.n_atoms == patch.topology.n_atoms  # every heavy atom kept, hydrogens added
    assert result.topology.getNumAtoms() > 2 * heavy.topology.n_atoms


def test_real_martini3_membrane_frame(tmp_path, capsys):
    """POPC and CHOL of a real 8-lipid Martini 3 membrane backmapped; the six unknown lipids listed."""
    frame = tmp_path / "mix8.gro"
    frame.write_bytes(gzip.open(MEMBRANE).read())
    out = tmp_path / "mix8_aa.pdb"
    assert main(["backmap", str(frame), "-o", str(out), "--no-minimize"]) == 2
    err = capsys.readouterr().err
    assert "SSM x74" in err and "DLPE x46" in err and "--unmapped drop" in err
    assert not out.exists()  # nothing half-written
    assert main(["backmap", str(frame), "-o", str(out), "--no-minimize", "--unmapped", "drop"]) == 0
    printed = capsys.readouterr().out
    assert "W x6514" in printed and "NA x96" in printed and "CL x47" in printed
    traj = mdtraj.load(str(out))
    names = [r.name for r in traj.topology.residues]
    assert names.count("POPC") == 80 and names.count("CHL1") == 126


def test_protein_and_lipids_in_one_frame_go_to_their_models():
    """martinize2 ubiquitin + 6 lipids of the held-out bilayer: two models, CHARMM36, one refined system."""
    ubq = load_structure(str(ROOT / "examples" / "data" / "1ubq_martinize2_cg.pdb"))
    bil = make_whole(load_structure(str(BILAYER)))
    lipids = [r for r in bil.topology.residues if r.name == "CHL"][:2] + \
        [r for r in bil.topology.residues if r.name == "POPC"][:4]
    patch = bil.atom_slice([a.index for r in lipids for a in r.atoms if a.element.symbol != "H"])
    patch.unitcell_vectors = None
    lip = hb.map_structure(patch, "martini3_lipids").cg
    lip.xyz += ubq.xyz.mean(1, keepdims=True) - lip.xyz.mean(1, keepdims=True) + np.array([4.0, 0, 0], np.float32)
    ubq.unitcell_vectors = None
    frame = ubq.stack(lip)
    raw = hb.backmap(frame)
    assert [p.model.path.name for p in raw.parts] == ["martini3_protein.pt", "martini3_lipids.pt"]
    assert raw.weights.shape == (frame.n_atoms, raw.trajectory.n_atoms)
    assert np.isnan(raw.phi_psi()[-6:]).all() and np.isfinite(raw.phi_psi()[1:70]).all()
    result = hb.backmap_and_simulate(frame, solvent=None)
    assert result.report["forcefield"] == "charmm36.xml"
    assert result.topology.getNumResidues() == 76 + 6
    heavy = result.trajectory.atom_slice(result.trajectory.topology.select("not element H"))
    report = hb.evaluate(heavy)
    assert stereo_errors(report) == {} and report["chirality_errors_ca"] == 0
    assert report["cis_peptides_nonpro"] == 0 and report["n_close_contacts"] == 0

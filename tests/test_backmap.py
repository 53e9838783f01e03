"""The shipped Martini 3 protein model, end to end on real CG inputs (martinize2 output, real chains).

Thresholds are set from the measured numbers in BENCHMARKS.md with a margin, so a model or
pipeline regression fails here.
"""

import json
from pathlib import Path

import mdtraj
import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit
import pytest

import openmm_herobm as hb
from openmm_herobm.cli.main import main
from openmm_herobm.io import load_structure

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
UBQ = ROOT / "examples" / "data" / "1ubq.pdb"
UBQ_CG = ROOT / "examples" / "data" / "1ubq_martinize2_cg.pdb"
MODEL = ROOT / "models" / "martini3_protein.pt"


@pytest.fixture(scope="module")
def model():
    return hb.load_model("martini3_protein")


def test_shipped_model_metadata(model):
    meta = model.metadata
    assert MODEL.stat().st_size < 20 * 2 ** 20
    assert meta["mapping_set"] == "martini3" and meta["cutoff"] > 0
    assert meta["validation"]["val_rmsd_heavy"] < 0.6  # 0.577 measured
    assert "ALA" in meta["molecules"] and len(meta["bead_types"]) == model.mapping_set.n_bead_types


def test_backmap_martinize2_ubiquitin(model, tmp_path):
    """Beads written by martinize2 itself -> heavy atoms close to the crystal structure."""
    out = tmp_path / "ubq.pdb"
    result = hb.backmap(str(UBQ_CG), output=out)  # no model given: the shipped one that fits is chosen
    assert result.model.path.name == "martini3_protein.pt"
    report = hb.evaluate_files(out, UBQ)
    assert report["n_atoms_compared"] == 601  # every heavy atom but the C-terminal OXT
    # network + protein fit (backmap's default); the raw network gave 0.643 / 0.346 A, 5 close contacts
    assert report["rmsd_heavy"] < 0.60  # 0.550 measured
    assert report["rmsd_backbone"] < 0.22  # 0.168 measured
    assert report["n_close_contacts"] <= 3  # 0 measured
    assert report["chirality_errors_ca"] == 0 and report["cis_peptides_nonpro"] == 0


def test_only_the_models_that_get_residues_are_loaded(monkeypatch):
    """The shipped models are chosen by their metadata; a protein loads the protein model alone (the
    lipid model's TorchScript and 44 mapping files were half a second of every protein's start), and
    a model is loaded once per process (a script or an exchange workflow backmaps frame by frame)."""
    from openmm_herobm import backmapping

    loaded = []
    real = backmapping.load_model
    monkeypatch.setattr(backmapping, "load_model", lambda m: loaded.append(Path(str(m)).stem) or real(m))
    monkeypatch.setattr(backmapping, "_LOADED", {})
    protein = load_structure(UBQ_CG).topology
    plan, unknown = backmapping.assign_models(protein)
    assert loaded == ["martini3_protein"] and not unknown
    assert [(m.path.name, len(r)) for m, r in plan] == [("martini3_protein.pt", 76)]
    first = plan[0][0]
    membrane = load_structure(ROOT / "tests" / "data" / "lipids" / "lipidome_membrane_v5_cg.gro.gz").topology
    plan, _ = backmapping.assign_models(membrane)
    assert loaded == ["martini3_protein", "martini3_lipids"] and [m.path.name for m, _ in plan] == ["martini3_lipids.pt"]
    # once per process and file: the next protein reuses the loaded model
    again, _ = backmapping.assign_models(protein)
    assert len(loaded) == 2 and again[0][0] is first


def test_backmap_real_test_chain_and_trajectory(model, tmp_path):
    """A held-out chain, three frames in one call: frame k equals a single-frame backmap of frame k."""
    path = DATA / "proteins" / "test" / "pb_7KM8_WPD_A.pdb.gz"
    ref = load_structure(path)
    ref = ref.atom_slice([a.index for a in ref.topology.atoms if a.element.symbol != "H"])
    cg = hb.map_structure(ref, "martini3").cg
    rng = np.random.default_rng(0)
    frames = mdtraj.Trajectory(cg.xyz + np.stack([np.zeros_like(cg.xyz[0]),
                                                  rng.normal(0, 0.01, cg.xyz[0].shape).astype(np.float32),
                                                  rng.normal(0, 0.01, cg.xyz[0].shape).astype(np.float32)]),
                               cg.topology)
    multi = hb.backmap(frames, model)
    single = hb.backmap(frames.slice([2], copy=False), model)
    assert multi.trajectory.n_frames == 3
    assert np.abs(multi.trajectory.xyz[2] - single.trajectory.xyz[0]).max() < 1e-5
    report = hb.evaluate(multi.trajectory.slice([0], copy=False), ref)
    assert report["rmsd_heavy"] < 0.66 and report["rmsd_backbone"] < 0.47  # 0.606 / 0.424 measured


def test_molecules_of_a_gro_frame_are_separate_chains_in_the_raw_output(model, tmp_path):
    """A GROMACS frame has no chains: two ubiquitins side by side read as one.  The raw output ends
    each molecule with TER, so OpenMM's PDBFile does not bond one's C-terminus to the other's
    N-terminus 5 nm away (before: one chain and that bond)."""
    one = mdtraj.load(str(UBQ_CG))
    two = one.stack(one)
    two.xyz[:, one.n_atoms:] += np.float32([5.0, 0.0, 0.0])
    two.unitcell_vectors = np.diag([12.0, 8.0, 8.0]).astype(np.float32)[None]
    gro = tmp_path / "two.gro"
    two.save_gro(str(gro))
    assert mdtraj.load(str(gro)).topology.n_chains == 1
    result = hb.backmap(str(gro), model, output=tmp_path / "raw.pdb")
    assert np.flatnonzero(result.breaks()).tolist() == [76]  # where the second molecule starts
    assert result.trajectory.topology.n_chains == 1  # in memory: the input's chains
    pdb = app.PDBFile(str(tmp_path / "raw.pdb"))
    assert pdb.topology.getNumChains() == 2
    x = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    length = [np.linalg.norm(x[a.index] - x[b.index]) for a, b in pdb.topology.bonds()]
    assert max(length) < 0.2
    np.testing.assert_allclose(x, result.trajectory.xyz[0], atol=6e-4)  # the same atoms, in order


def test_backmap_real_condensate_frame_drops_solvent_with_a_report(model, tmp_path, capsys):
    """A real Martini3-IDP simulation frame (54 peptides, W, ION): protein backmapped, solvent listed."""
    frame = tmp_path / "gy23.gro"
    import gzip

    frame.write_bytes(gzip.open(DATA / "cg_real" / "m3idp_GY23_24us-nopbc.gro.gz").read())
    out = tmp_path / "gy23_aa.pdb"
    # W and ION beads are solvent, not unknown molecules: counted, left to the pipeline's solvent step
    assert main(["backmap", str(frame), "-o", str(out), "--no-minimize"]) == 0
    printed = capsys.readouterr().out
    assert "W x23779" in printed and "NA x175" in printed and "CL x175" in printed
    report = hb.evaluate_files(out)
    assert report["n_atoms_pred_heavy"] > 8000
    # a real IDP simulation frame is far from the training structures: the raw network
    # gets a third of the CA centres wrong (measured 424 of 1242); backmap_and_simulate repairs them
    assert report["chirality_errors_ca"] < 0.5 * 54 * 23


def test_backmap_and_simulate_ubiquitin(model, tmp_path):
    """Whole pipeline: zero stereo and cis errors, no close contacts, accuracy kept, MD-ready outputs."""
    raw = hb.backmap(str(UBQ_CG), model)
    raw_report = hb.evaluate(raw.trajectory, mdtraj.load(str(UBQ)))
    out = tmp_path / "ubq_md.pdb"
    result = hb.backmap_and_simulate(str(UBQ_CG), model, output=out)
    assert [Path(p).name for p in result.written] == ["ubq_md.pdb", "ubq_md.system.xml", "ubq_md.state.xml",
                                                      "ubq_md.report.json"]
    refined = hb.evaluate_files(out, UBQ)
    assert refined["chirality_errors_ca"] == refined["chirality_errors_ile_cb"] == refined["chirality_errors_thr_cb"] == 0
    assert refined["cis_peptides_nonpro"] == 0
    assert refined["n_close_contacts"] == 0
    assert refined["rmsd_heavy"] <= raw_report["rmsd_heavy"] + 0.1
    assert result.energies["minimized"] < result.energies["initial"] and result.energies["minimized"] < 0
    assert set(result.timings) >= {"model", "topology", "hydrogens", "system", "minimize"}
    # the fit did the backbone: the CA-fixed backbone optimisation (which undid it) is skipped
    assert "backbone" not in result.timings and refined["rmsd_backbone"] < 0.22  # 0.167 measured
    report = json.loads((tmp_path / "ubq_md.report.json").read_text())
    assert report["chirality_errors_ca"] == 0 and report["n_atoms"] == result.topology.getNumAtoms()
    # the written System/State continue in plain OpenMM (no openmm-torch needed): 1 ps with HBonds... as written
    system = mm.XmlSerializer.deserialize((tmp_path / "ubq_md.system.xml").read_text())
    names = {type(system.getForce(i)).__name__ for i in range(system.getNumForces())}
    assert all(system.getForce(i).getName() != "HEroBM bead restraint" for i in range(system.getNumForces()))
    # refinement-only guards are gone; implicit solvent is OpenMM's native OBC2 force
    assert "TorchForce" not in names and "CustomCompoundBondForce" not in names and "CustomTorsionForce" not in names
    assert "GBSAOBCForce" in names and "CustomGBForce" not in names
    state = mm.XmlSerializer.deserialize((tmp_path / "ubq_md.state.xml").read_text())
    pdb = app.PDBFile(str(out))
    assert pdb.topology.getNumAtoms() == system.getNumParticles()
    integrator = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.0005 * unit.picoseconds)
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("CPU"))
    context.setState(state)
    context.setVelocitiesToTemperature(300 * unit.kelvin)
    integrator.step(200)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert np.isfinite(energy) and energy < 0


def test_model_mapping_mismatch_cli(tmp_path, capsys):
    """A model with another mapping set's hash is refused with one line, before any output."""
    out = tmp_path / "o.pdb"
    code = main(["backmap", str(UBQ_CG), "--model", str(MODEL), "-o", str(out), "--no-minimize"])
    assert code == 0 and out.exists()
    ca_cg = tmp_path / "ca_cg.pdb"
    assert main(["map", str(UBQ), "-m", "ca", "-o", str(ca_cg)]) == 0
    out2 = tmp_path / "o2.pdb"
    code = main(["backmap", str(ca_cg), "--model", str(MODEL), "-o", str(out2), "--no-minimize"])
    err = capsys.readouterr().err
    assert code == 2 and not out2.exists()
    assert "bead" in err and len(err.strip().splitlines()) == 1


def test_cg_water_and_ions_rebuilt_in_the_cg_box():
    """W and ION beads of a periodic CG frame: explicit water and Na+/Cl- at the CG salt level, in the CG box."""
    from collections import Counter

    ubq = load_structure(str(UBQ_CG))
    top, xyz = ubq.topology.copy(), list(ubq.xyz[0] + (3.0 - ubq.xyz[0].mean(0)))
    chain = top.add_chain()
    grid = [[x, y, z] for x in np.linspace(0.2, 5.8, 6) for y in np.linspace(0.2, 5.8, 6) for z in (0.2, 5.8)]
    for name, res in [("W", "W")] * 64 + [("NA", "ION")] * 4 + [("CL", "ION")] * 4:
        residue = top.add_residue(res, chain)
        top.add_atom(name, mdtraj.element.virtual_site, residue)
        xyz.append(grid[len(xyz) - ubq.n_atoms])
    frame = mdtraj.Trajectory(np.array(xyz, np.float32)[None], top)
    frame.unitcell_vectors = np.eye(3, dtype=np.float32)[None] * 6.0
    raw = hb.backmap(frame)
    assert raw.solvent == {"W": 64, "NA": 4, "CL": 4}
    result = hb.backmap_and_simulate(frame, solvent="explicit")
    rebuilt = result.report["solvent_rebuilt"]
    assert rebuilt["box_nm"] == [6.0, 6.0, 6.0] and rebuilt["ionic_strength_M"] == pytest.approx(55.5 * 4 / 256, abs=1e-3)
    box = result.topology.getPeriodicBoxVectors().value_in_unit(unit.nanometer)
    assert np.allclose([box[0][0], box[1][1], box[2][2]], 6.0)
    names = Counter(r.name for r in result.topology.residues())
    assert names["HOH"] > 5000 and names["NA"] > 0 and names["CL"] > 0
    assert result.report["chirality_errors_ca"] == 0 and result.report["n_close_contacts"] == 0

"""The full pipeline at its edges, on real structures: free amino acids, periodic inputs, residue
names that go round trip through ``herobm map``, and a run without the ``simtk.openmm`` message.

Inputs: residues of the martinize2 ubiquitin example; lipids of the NMRLipids CHARMM36 POPC
bilayers in the shared data (a corner of the pure-POPC bilayer keeps its real periodic box:
the lipids there meet each other only across the boundary).
"""

import os
import subprocess
import sys
from pathlib import Path

import mdtraj
import numpy as np
import openmm as mm
import pytest
from scipy.spatial import cKDTree

import openmm_herobm as hb
from openmm_herobm.cli.main import main
from openmm_herobm.errors import HeroBMError
from openmm_herobm.io import load_structure, make_whole, save_structure

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
UBQ_CG = ROOT / "examples" / "data" / "1ubq_martinize2_cg.pdb"
POPC = DATA / "lipids" / "charmm36_POPCpure.gro.gz"
POPC_CHOL = DATA / "lipids" / "charmm36_POPCchol-20pct.gro.gz"


def ubq_residues(resids, chains=None):
    """CG ubiquitin residues ``resids``, in chain A or each in the chain of ``chains``."""
    cg = load_structure(str(UBQ_CG))
    cg.unitcell_vectors = None
    keep = [r for r in cg.topology.residues if r.resSeq in resids]
    part = cg.atom_slice([a.index for r in keep for a in r.atoms])
    if chains is None:
        return part
    top = mdtraj.Topology()
    chain = None
    for residue, chain_id in zip(part.topology.residues, chains):
        if chain is None or chain.chain_id != chain_id:
            chain = top.add_chain(chain_id=chain_id)
        new = top.add_residue(residue.name, chain, resSeq=residue.resSeq)
        for atom in residue.atoms:
            top.add_atom(atom.name, atom.element, new)
    return mdtraj.Trajectory(part.xyz, top)


def residue_charges(result):
    nonbonded = next(f for f in result.system.getForces() if isinstance(f, mm.NonbondedForce))
    charge = np.array([nonbonded.getParticleParameters(i)[0]._value for i in range(nonbonded.getNumParticles())])
    return np.array([charge[[a.index for a in r.atoms()]].sum() for r in result.topology.residues()])


def cli(*args, cwd=ROOT):
    """The herobm command in a fresh interpreter (its imports happen there, as for a user)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "openmm_herobm.cli.main", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=cwd, check=False)


# -- free amino acids ----------------------------------------------------------------------------
def check_free(result, n):
    """``n`` residues, each a chain of its own, each a zwitterion: NH3+ and COO-, net charge 0."""
    residues = list(result.topology.residues())
    assert len(residues) == n and result.topology.getNumChains() == n
    on_n = {r.index: 0 for r in residues}  # hydrogens on the amine N
    for a, b in result.topology.bonds():
        for amine, h in ((a, b), (b, a)):
            on_n[amine.residue.index] += amine.name == "N" and h.element.symbol == "H"
    assert set(on_n.values()) == {3}
    for residue in residues:
        names = {a.name for a in residue.atoms()}
        assert "OXT" in names and "HXT" not in names, residue
    assert np.allclose(residue_charges(result), 0.0, atol=1e-6)
    heavy = result.trajectory.atom_slice(result.trajectory.topology.select("not element H"))
    report = hb.evaluate(heavy)
    assert report["chirality_errors_ca"] == 0 and report["n_close_contacts"] == 0
    assert result.energies["minimized"] <= result.energies["initial"]


def test_single_amino_acid_is_refined_as_a_free_amino_acid():
    """One residue of ubiquitin (GLN 2): amber14 has no template for it, so the default is CHARMM36."""
    result = hb.backmap_and_simulate(ubq_residues({2}), solvent=None)
    assert result.report["forcefield"] == "charmm36.xml" and result.report["free_amino_acids"] == 1
    check_free(result, 1)


def test_residues_each_alone_are_free_amino_acids_in_one_chain_or_many():
    """Four residues far apart: one chain each (as martinize2 writes molecules), then all in one
    chain (as a GRO file has them); either way four free amino acids, none left out."""
    resids = {2, 20, 40, 60}
    for cg in (ubq_residues(resids, chains="ABCD"), ubq_residues(resids)):
        result = hb.backmap_and_simulate(cg, solvent=None)
        assert "dropped_residues" not in result.report and result.report["free_amino_acids"] == 4
        check_free(result, 4)
        assert [r.name for r in result.topology.residues()] == ["GLN", "SER", "GLN", "ASN"]


def test_free_amino_acids_with_amber14_refused_in_one_line(tmp_path):
    cg = tmp_path / "single.pdb"
    save_structure(ubq_residues({2, 60}, chains="AB"), cg)
    out = tmp_path / "single_aa.pdb"
    run = cli("backmap", cg, "-o", out, "--forcefield", "amber14-all.xml", "--no-progress")
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"herobm: error: {cg}: nothing to refine: every residue is a free")
    assert "GLN 2 (chain A)" in lines[0] and "ASN 60 (chain B)" in lines[0] and "--forcefield charmm36.xml" in lines[0]
    assert list(tmp_path.iterdir()) == [cg]  # nothing written


def test_free_amino_acid_beside_a_protein_is_left_out_with_amber14():
    """A peptide (ubiquitin 1-5) and a lone residue in a chain of its own: the peptide is refined with
    amber14, the free one is left out and named (it used to end in OpenMM's 'No template found')."""
    cg = ubq_residues({1, 2, 3, 4, 5, 60}, chains="AAAAAB")
    with pytest.warns(UserWarning, match=r"ASN 60 \(chain B\)"):
        result = hb.backmap_and_simulate(cg, solvent=None)
    assert result.report["forcefield"] == "amber14-all.xml"
    assert result.report["dropped_residues"] == ["ASN 60 (chain B)"]
    assert [r.id for r in result.topology.residues()] == ["1", "2", "3", "4", "5"]


# -- periodic inputs -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corner(tmp_path_factory):
    """CG of the 17 POPC around the corner of the pure-POPC bilayer's box, in that box (.gro)."""
    aa = make_whole(load_structure(str(POPC)))
    box = aa.unitcell_lengths[0].astype(np.float64)
    keep = []
    for residue in aa.topology.residues:
        if residue.name == "POPC":
            p = next(a.index for a in residue.atoms if a.name == "P")
            x, y = aa.xyz[0, p, :2] % box[:2]
            if min(x, box[0] - x) < 1.2 and min(y, box[1] - y) < 1.2:
                keep.append(residue.index)
    patch = aa.atom_slice([a.index for r in keep for a in aa.topology.residue(r).atoms if a.element.symbol != "H"])
    path = tmp_path_factory.mktemp("corner") / "corner.gro"
    save_structure(hb.map_structure(patch, "martini3_lipids").cg, path)
    assert len(keep) == 17
    return path, box


def periodic_contacts(path, box):
    """Heavy-atom distances (nm) between different molecules, with periodic images: all pairs under
    0.6 nm, and which of them are across the boundary."""
    traj = mdtraj.load(str(path))
    heavy = traj.topology.select("not element H")
    xyz = traj.xyz[0, heavy].astype(np.float64)
    residue = np.array([traj.topology.atom(i).residue.index for i in heavy])
    pairs = cKDTree(xyz % box, boxsize=box).query_pairs(0.6, output_type="ndarray")
    pairs = pairs[residue[pairs[:, 0]] != residue[pairs[:, 1]]]
    d = xyz[pairs[:, 0]] - xyz[pairs[:, 1]]
    image = np.linalg.norm(d - box * np.round(d / box), axis=1)
    return traj, image, np.abs(np.linalg.norm(d, axis=1) - image) > 1e-6


def check_periodic(path, box):
    traj, distance, across = periodic_contacts(path, box)
    assert np.allclose(traj.unitcell_lengths[0], box, atol=1e-3) and np.allclose(traj.unitcell_angles[0], 90.0)
    assert (distance[across] < 0.5).sum() > 500  # the lipids do meet across the boundary
    # refined without periodic images, these came out 2.1 A apart (1.7 A in the issue)
    assert distance.min() > 0.25


def test_periodic_input_keeps_its_box_in_vacuum_and_without_refinement(corner, tmp_path):
    cg, box = corner
    raw, out = tmp_path / "raw.pdb", tmp_path / "vacuum.pdb"
    assert main(["backmap", str(cg), "-o", str(raw), "--no-minimize", "--no-progress"]) == 0
    assert main(["backmap", str(cg), "-o", str(out), "--solvent", "vacuum", "--no-progress"]) == 0
    cryst1 = f"CRYST1{box[0] * 10:9.3f}{box[1] * 10:9.3f}{box[2] * 10:9.3f}  90.00  90.00  90.00 P 1"
    for path in (raw, out):
        assert next(line for line in path.read_text().splitlines() if line.startswith("CRYST1")).startswith(cryst1)
    check_periodic(out, box)
    system = mm.XmlSerializer.deserialize((tmp_path / "vacuum.system.xml").read_text())
    assert system.usesPeriodicBoundaryConditions()


def test_periodic_input_keeps_its_box_in_implicit_solvent_mmcif(corner, tmp_path):
    cg, box = corner
    out = tmp_path / "implicit.cif"
    assert main(["backmap", str(cg), "-o", str(out), "--no-progress"]) == 0
    cell = dict(line.split() for line in out.read_text().splitlines() if line.startswith("_cell."))
    assert [float(cell[f"_cell.length_{k}"]) for k in "abc"] == pytest.approx(box * 10, abs=1e-3)
    check_periodic(out, box)
    system = mm.XmlSerializer.deserialize(out.with_suffix(".system.xml").read_text())
    gb = next(f for f in system.getForces() if isinstance(f, mm.GBSAOBCForce))
    assert gb.getNonbondedMethod() == mm.GBSAOBCForce.CutoffPeriodic


def test_box_narrower_than_twice_the_cutoff_refused_before_the_model(tmp_path, capsys):
    cg = ubq_residues({2})
    cg.unitcell_vectors = np.diag([1.5, 4.0, 4.0]).astype(np.float32)[None]
    with pytest.raises(HeroBMError, match=r"periodic box \(1.50 x 4.00 x 4.00 nm\) is narrower than twice"):
        hb.backmap_and_simulate(cg, solvent=None)


# -- residue names, round trip, no simtk message -------------------------------------------------
def test_raw_and_refined_outputs_share_residue_names_and_map_back(tmp_path):
    """Ubiquitin 1-5 with a POPC and a cholesterol: the raw heavy atoms and the refined structure
    name cholesterol CHL1 (CHARMM36's template), and ``herobm map`` reads both back; the refined
    run prints no ``simtk.openmm`` deprecation message (openmm-torch's wrapper used to)."""
    bilayer = make_whole(load_structure(str(POPC_CHOL)))
    lipids = [next(r for r in bilayer.topology.residues if r.name == name) for name in ("POPC", "CHL")]
    patch = bilayer.atom_slice([a.index for r in lipids for a in r.atoms if a.element.symbol != "H"])
    patch.unitcell_vectors = None
    lip = hb.map_structure(patch, "martini3_lipids").cg
    peptide = ubq_residues({1, 2, 3, 4, 5})
    lip.xyz += peptide.xyz.mean(1, keepdims=True) - lip.xyz.mean(1, keepdims=True) + np.float32([3.0, 0, 0])
    cg = tmp_path / "mixed.pdb"
    save_structure(peptide.stack(lip), cg)
    raw, full = tmp_path / "raw.pdb", tmp_path / "full.pdb"
    assert main(["backmap", str(cg), "-o", str(raw), "--no-minimize", "--no-progress"]) == 0
    run = cli("backmap", cg, "-o", full, "--solvent", "vacuum", "--no-progress")
    assert run.returncode == 0, run.stderr
    assert "simtk" not in run.stderr + run.stdout and "Traceback" not in run.stderr
    names = [[r.name for r in mdtraj.load(str(p)).topology.residues] for p in (raw, full)]
    assert names[0] == names[1] == ["MET", "GLN", "ILE", "PHE", "VAL", "POPC", "CHL1"]
    for path in (raw, full):
        back = tmp_path / f"{path.stem}_cg.pdb"
        assert main(["map", str(path), "-m", "martini3_lipids", "--unmapped", "drop", "-o", str(back)]) == 0
        mapped = mdtraj.load(str(back))
        assert [r.name for r in mapped.topology.residues] == ["POPC", "CHOL"]
        # the lipids' beads come back where the input had them
        assert np.abs(mapped.xyz[0] - lip.xyz[0]).max() < 0.1

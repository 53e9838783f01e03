"""The ligand workflow end to end on a real drug: (S)-ibuprofen.

RDKit conformers -> `herobm mapping complete` -> `herobm dataset` (multi-model file) ->
`herobm train` (tiny, CPU, seconds) -> `herobm deploy` -> backmap held-out conformers ->
GAFF2 parameters from antechamber (`herobm ligand-params`) -> OpenMM refinement.
The full-size run (300 conformers, 3000 steps) is in docs/ligand-tutorial.md.
"""

import sys
from pathlib import Path

import mdtraj
import numpy as np
import pytest

import openmm_herobm as hb
from openmm_herobm.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples" / "ligand"))
make_conformers = pytest.importorskip("make_conformers")


def c11_volume(xyz, top):
    """Signed volume at the stereocentre C11 (neighbours C8, C12, C13); its sign is the configuration."""
    a = {x.name: x.index for x in top.atoms}
    c, p, q, r = (xyz[a[n]] for n in ("C11", "C8", "C12", "C13"))
    return float(np.dot(p - c, np.cross(q - c, r - c)))


@pytest.fixture(scope="module")
def workflow(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ibp")
    make_conformers.main(["-o", str(tmp / "conf.pdb"), "--sdf", str(tmp / "ibp.sdf"), "--n", "80", "--seed", "3"])
    conf = mdtraj.load(str(tmp / "conf.pdb"))
    conf[:60].save_pdb(str(tmp / "train.pdb"))
    conf[60:70].save_pdb(str(tmp / "val.pdb"))
    conf[70:].save_pdb(str(tmp / "test.pdb"))
    (tmp / "set").mkdir()
    assert main(["mapping", "complete", str(ROOT / "examples" / "ligand" / "IBP.input.yaml"),
                 "-s", str(tmp / "train.pdb"), "-o", str(tmp / "set" / "IBP.yaml")]) == 0
    for split in ("train", "val"):
        assert main(["dataset", str(tmp / f"{split}.pdb"), "-m", str(tmp / "set"), "-o", str(tmp / f"{split}.npz")]) == 0
    config = tmp / "train.yaml"
    config.write_text(f"""train: {tmp / 'train.npz'}
val: {tmp / 'val.npz'}
mapping: {tmp / 'set'}
output: {tmp / 'run'}
steps: 400
epoch_steps: 200
patches_per_step: 8
patch_radius: 12.0
lr: 0.005
lr_final: 0.0005
val_chains: 10
threads: 2
model: {{cutoff: 8.0, channels: 8, embed_dim: 8, edge_dim: 16, n_radial: 6, hidden_mul: 8}}
loss: {{dihedral: 0.0}}
""")
    assert main(["train", str(config), "--no-progress"]) == 0
    assert main(["deploy", str(tmp / "run" / "best.pt"), "-o", str(tmp / "ibp.pt")]) == 0
    return tmp, conf


def test_multi_model_file_gives_one_training_entry_per_conformer(workflow):
    tmp, _ = workflow
    data = np.load(tmp / "train.npz")
    assert len(data["chain_names"]) == 60 and data["chain_names"][1] == "train#1"


def test_ligand_model_backmaps_held_out_conformers(workflow):
    tmp, conf = workflow
    test = conf[70:]
    heavy = test.atom_slice(test.topology.select("not element H"))
    cg = hb.map_structure(heavy, str(tmp / "set")).cg
    result = hb.backmap(cg, str(tmp / "ibp.pt"))
    errors = [hb.evaluate(result.trajectory, heavy, frame=f)["rmsd_heavy"] for f in range(test.n_frames)]
    # a tiny model trained for seconds; the tutorial's full run reaches much lower (docs/ligand-tutorial.md)
    assert np.mean(errors) < 1.0


def test_gaff_parameters_and_refinement(workflow):
    pytest.importorskip("parmed")
    tmp, conf = workflow
    assert main(["ligand-params", str(tmp / "ibp.sdf"), "--name", "IBP", "-o", str(tmp / "IBP.xml")]) == 0
    one = conf[75]
    heavy = one.atom_slice(one.topology.select("not element H"))
    cg = hb.map_structure(heavy, str(tmp / "set")).cg
    result = hb.backmap_and_simulate(cg, str(tmp / "ibp.pt"), forcefield=["amber14-all.xml", str(tmp / "IBP.xml")],
                                     solvent=None)
    final = result.trajectory
    assert final.n_atoms == 33  # every hydrogen from the GAFF2 template
    heavy_out = final.atom_slice(final.topology.select("not element H"))
    report = hb.evaluate(heavy_out, heavy)
    assert report["rmsd_heavy"] < 1.0 and report["n_close_contacts"] == 0
    assert result.energies["minimized"] < result.energies["initial"]
    # (S) kept: the configuration of the reference conformer
    assert np.sign(c11_volume(heavy_out.xyz[0], heavy_out.topology)) == np.sign(c11_volume(heavy.xyz[0], heavy.topology))

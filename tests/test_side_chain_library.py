"""The side-chain library (bead-conditioned kernel k-NN over training residues) that the protein
fit mixes into the network's side chains, on real chains.

Thresholds come from measured numbers with a margin, so a regression fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

import openmm_herobm as hb
from openmm_herobm.cli.main import main
from openmm_herobm.errors import HeroBMError
from openmm_herobm.io import load_structure
from openmm_herobm.mapping import MappingSet
from openmm_herobm.model import attach_side_chains
from openmm_herobm.reconstruction import SideChainBlend, SideChainLibrary
from openmm_herobm.training.side_chains import LIBRARY_RESIDUES, build_side_chain_library, mapped_chain

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "proteins"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason="shared data not found")
CHAIN = "pb_7KM8_WPD_A"  # held-out test chain, 132 residues


@pytest.fixture(scope="module")
def model():
    return hb.load_model("martini3_protein")


def _mean_fit(cg, model, library):
    """backmap's RMSD-optimal mode (side_chains="mean": the protein fit and the library blend), or the
    same fit without the library: the path these tests measure."""
    from openmm_herobm.reconstruction import ProteinFit

    result = hb.backmap(cg, model, fit=False)
    fit = ProteinFit(result.system, library)
    xyz = fit(result.trajectory.xyz[0] * 10.0, cg.xyz[0, result.bead_index] * 10.0, result.dihedrals[0])
    result.trajectory.xyz[0] = xyz / 10.0
    return result


@pytest.fixture(scope="module")
def chain(model):
    ref = load_structure(DATA / "test" / f"{CHAIN}.pdb.gz")
    ref = ref.atom_slice([a.index for a in ref.topology.atoms if a.element.symbol != "H"])
    cg = hb.map_structure(ref, "martini3").cg
    return ref, cg, _mean_fit(cg, model, None), _mean_fit(cg, model, model.side_chains)


def test_shipped_model_carries_a_tuned_library(model):
    lib = model.side_chains
    assert lib is not None and set(lib.residues) == set(LIBRARY_RESIDUES)
    assert len(lib) > 100_000  # built from the whole training split
    # the ambiguous ends (carboxylates, amides, MET, LEU) lean on the library; tuned on validation
    for name in ("GLU", "GLN", "LEU", "MET"):
        assert lib.residues[name].weight >= 0.5
    assert model.metadata["side_chains"]["mapping_hash"] == model.metadata["mapping_hash"]
    assert model.path.stat().st_size < 12e6


def test_library_beats_the_network_on_a_held_out_chain(chain):
    ref, cg, without, with_library = chain
    before, after = hb.evaluate(without.trajectory, ref), hb.evaluate(with_library.trajectory, ref)
    assert after["rmsd_sidechain"] < before["rmsd_sidechain"] - 0.05
    assert after["rmsd_heavy"] < before["rmsd_heavy"] - 0.03
    assert after["rmsd_backbone"] == pytest.approx(before["rmsd_backbone"], abs=1e-4)  # backbone untouched
    for key in ("chirality_errors_ca", "chirality_errors_ile_cb", "chirality_errors_thr_cb", "cis_peptides_nonpro"):
        assert after[key] == 0
    # the geometry polish after the blend: bonds no worse than without the library
    assert after["bond_length_mae"] <= before["bond_length_mae"] + 0.005
    assert after["n_bonds_out_of_range"] <= before["n_bonds_out_of_range"]
    beads = cg.xyz[0, with_library.bead_index]
    assert np.linalg.norm(with_library.weights @ with_library.trajectory.xyz[0] - beads, axis=1).max() < 0.005


def test_library_reproduces_its_own_entries():
    """A library built from one chain, asked with one neighbour, gives that chain's side chains back
    (float16 storage: ~0.01 A) - the frames, keys and atom order agree between build and use."""
    ms = MappingSet.load("martini3")
    path = DATA / "test" / f"{CHAIN}.pdb.gz"
    library = build_side_chain_library([path], ms)
    library.neighbours = 1
    system, xyz, beads = mapped_chain(str(path), ms)
    blend = SideChainBlend(system, library)
    placed = blend.library_atoms(xyz, beads)
    assert set(placed) == {n for n in LIBRARY_RESIDUES if n in library.residues} and len(placed) >= 10
    for name, atoms in placed.items():
        assert np.abs(atoms - xyz[blend.groups[name]["atoms"]]).max() < 0.02, name
    assert np.abs(blend(xyz, beads) - xyz).max() < 0.02


def test_blend_is_equivariant(chain, model):
    _, cg, without, _ = chain
    blend = SideChainBlend(without.system, model.side_chains)
    xyz = without.trajectory.xyz[0].astype(np.float64) * 10.0
    beads = cg.xyz[0, without.bead_index].astype(np.float64) * 10.0
    rot = Rotation.random(random_state=7).as_matrix()
    move = lambda x: x @ rot.T + np.array([5.0, 40.0, -12.0])  # noqa: E731
    assert np.abs(move(blend(xyz, beads)) - blend(move(xyz), move(beads))).max() < 1e-3


def test_degenerate_backbone_frame_keeps_the_network_side_chain(chain, model):
    _, cg, without, _ = chain
    blend = SideChainBlend(without.system, model.side_chains)
    xyz = without.trajectory.xyz[0].astype(np.float64) * 10.0
    beads = cg.xyz[0, without.bead_index].astype(np.float64) * 10.0
    glu = blend.groups["GLU"]
    n, ca, _ = glu["frame"][0]
    xyz[n] = xyz[ca]  # N on CA: no frame for this residue
    out = blend(xyz, beads)
    assert np.isfinite(out).all()
    assert np.abs(out[glu["atoms"][0]] - xyz[glu["atoms"][0]]).max() < 1e-3  # on its bead already


def test_library_round_trip_and_bad_files(tmp_path, model):
    lib = model.side_chains
    again = SideChainLibrary.from_bytes(lib.to_bytes())
    assert again.neighbours == lib.neighbours and len(again) == len(lib)
    for name, r in lib.residues.items():
        assert np.array_equal(again.residues[name].atoms, r.atoms) and again.residues[name].weight == r.weight
    with pytest.raises(ValueError):
        SideChainLibrary.from_bytes(b"not a library")
    # a library of another mapping set is refused, and the model file is left as it was
    other = lib.with_weights({})
    other.info = dict(other.info, mapping_set="other", mapping_hash="0" * 64)
    copy = tmp_path / "m.pt"
    copy.write_bytes(model.path.read_bytes())
    with pytest.raises(HeroBMError, match="rebuild the library"):
        attach_side_chains(copy, other)
    assert copy.read_bytes() == model.path.read_bytes()
    assert not list(tmp_path.glob(".m.pt*"))  # no half-written file


def test_cli_side_chain_modes(tmp_path, model):
    """--side-chains mean is backmap(side_chains="mean"); --no-side-chains is "network" (no library)."""
    cg = ROOT / "examples" / "data" / "1ubq_martinize2_cg.pdb"
    for flags, mode in ((["--no-side-chains"], "network"), (["--side-chains", "mean"], "mean")):
        out = tmp_path / f"ubq_{mode}.pdb"
        assert main(["backmap", str(cg), "-o", str(out), "--no-minimize", *flags]) == 0
        written = load_structure(out).xyz[0]
        assert np.abs(written - hb.backmap(str(cg), model, side_chains=mode).trajectory.xyz[0]).max() < 1e-3
        assert np.abs(written - hb.backmap(str(cg), model).trajectory.xyz[0]).max() > 0.05

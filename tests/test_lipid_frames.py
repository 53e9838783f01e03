"""The lipid frame regression: fitted on real CHARMM36 bilayers, scored on one it never saw, shipped
inside the lipid model, and what ``backmap`` makes of it."""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import openmm_herobm as hb
from openmm_herobm.errors import HeroBMError
from openmm_herobm.model import attach_lipid_frames, load_model
from openmm_herobm.reconstruction import LIPID_FRAMES, LipidFrames
from openmm_herobm.training import build_lipid_frames, evaluate_lipid_frames

ROOT = Path(__file__).resolve().parents[1]
LIPIDS = ROOT.parent / "shared" / "data" / "lipids"
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.fixture(scope="module")
def popc_frames():
    """Fitted on two NMRLipids CHARMM36 POPC bilayers (144 molecules)."""
    return build_lipid_frames([LIPIDS / "charmm36_POPCnacl-13na.gro.gz", LIPIDS / "charmm36_POPCnacl-26na.gro.gz"])


def test_fitted_on_two_bilayers_it_places_a_third_closer_than_the_shipped_network(popc_frames):
    """Held out: POPCpure (72 POPC).  The regression alone, on its mapped beads, against the truth;
    the shipped network scores 0.93 A there (BENCHMARKS.md); these 144 training molecules give 0.74."""
    assert set(popc_frames.molecules) == {"POPC"}
    assert popc_frames.info["training_molecules"] == {"POPC": 144}
    score = evaluate_lipid_frames(popc_frames, [LIPIDS / "charmm36_POPCpure.gro.gz"])["POPC"]
    assert score["n"] == 72
    assert score["mean"] < 0.82 and score["p95"] < 1.0


def test_prediction_turns_with_the_molecule_and_keeps_its_handedness(popc_frames):
    from openmm_herobm.training.side_chains import mapped_chain

    system, _, beads = mapped_chain(str(LIPIDS / "charmm36_POPCpure.gro.gz"), hb.MappingSet.load("martini3_lipids"))
    popc = popc_frames.molecules["POPC"]
    b = np.array([beads[r.beads] for r in system.residues[:5]])
    pred, got = popc.predict(b)
    assert got.all() and np.isfinite(pred).all()
    angle = 1.1
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]) @ \
        np.array([[1, 0, 0], [0, np.cos(0.4), -np.sin(0.4)], [0, np.sin(0.4), np.cos(0.4)]])
    moved, _ = popc.predict(b @ rot.T + [3.0, -7.0, 11.0])
    assert np.abs(moved - (pred @ rot.T + [3.0, -7.0, 11.0])).max() < 1e-6
    # a mirror image of the beads does not give the mirror image of the atoms: frames are never reflected
    mirrored, _ = popc.predict(b * [1, 1, -1])
    assert np.abs(mirrored - pred * [1, 1, -1]).max() > 0.5


def test_round_trip_and_a_damaged_regression_is_refused_in_one_line(popc_frames, tmp_path):
    again = LipidFrames.from_bytes(popc_frames.to_bytes())
    beads = np.random.default_rng(0).normal(size=(3, 12, 3)) * 4.0
    a, _ = popc_frames.molecules["POPC"].predict(beads)
    b, _ = again.molecules["POPC"].predict(beads)
    assert np.abs(a - b).max() < 1e-3  # stored as float32
    model = tmp_path / "lipids.pt"
    attach_lipid_frames("martini3_lipids", popc_frames, model)
    loaded = load_model(model)
    assert set(loaded.lipid_frames.molecules) == {"POPC"}
    assert loaded.metadata["lipid_frames"]["molecules"] == ["POPC"]
    # an index out of range in the file: refused when loading, never used
    popc = popc_frames.molecules["POPC"]
    popc.outputs[0, 0] += 1000
    try:
        damaged = popc_frames.to_bytes()
    finally:
        popc.outputs[0, 0] -= 1000
    bad = tmp_path / "damaged.pt"
    with zipfile.ZipFile(model) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = damaged if item.filename.endswith("/extra/" + LIPID_FRAMES) else src.read(item.filename)
            dst.writestr(item, data)
    with pytest.raises(HeroBMError, match="unreadable lipid frames.*re-create the model file"):
        load_model(bad)


def test_the_shipped_model_carries_frames_and_builds_popc_and_cholesterol_right_by_construction():
    """Held-out Test 1 bilayer (100 POPC, 24 CHL): with the shipped regression the raw output needs
    no glycerol or cholesterol centre repaired (the network alone: 30 glycerol C2 and 2 cholesterol
    C20 on this bilayer), and is closer to the truth."""
    import lipid_quality as lq

    loaded = load_model("martini3_lipids")
    assert {"POPC", "CHL"} <= set(loaded.lipid_frames.molecules)
    ref = lq.reference(lq.BILAYER)
    cg = hb.map_structure(ref, "martini3_lipids").cg
    raw = hb.backmap(cg, "martini3_lipids")
    repaired = {k: v for p in raw.parts for k, v in p.stereo_repaired.items()}
    assert not {k: v for k, v in repaired.items() if k != "popc_oleoyl_c9"}
    row = lq.evaluate_variant(raw.trajectory, ref)["rmsd_per_molecule_A"]
    assert row["POPC"]["mean"] < 0.92 and row["CHL"]["mean"] < 0.4  # network: 1.10 and 0.50
    assert all(row[n]["stereo_errors"] == 0 and row[n]["cis_trans_errors"] == 0 and row[n]["bonds_out_of_range"] == 0
               for n in ("POPC", "CHL"))

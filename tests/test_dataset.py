"""Training dataset (openmm_herobm.training.dataset) on real chains from /work/shared/data."""

import argparse
import gzip
import json
import os
from collections import Counter
from pathlib import Path

import mdtraj as md
import numpy as np
import pytest
import torch

from openmm_herobm.io import load_structure
from openmm_herobm.mapping import MappingSet, SystemMapping
from openmm_herobm.reconstruction import reconstruct
from openmm_herobm.training import ProteinDataset, build_dataset, collate
from openmm_herobm.training import add_dataset_parser

TEST = Path("/work/shared/data/proteins/test")
CHAINS = [
    "bm5_1AZS_r_u_A",  # 7 incomplete residues, 2 residues missing whole beads, 7 chain breaks
    "bm5_1XU1_l_b_B",  # small; ARG 72 misses a whole bead
    "bm5_1IRAtrunc_l_b_B",  # incomplete residues only
    "pb_7ZYS_KNR_A",  # has hydrogens; incomplete residues
    "pb_7KM8_WPD_A",  # a chain break, cis peptides
    "bm5_1F51_l_b_B",  # incomplete and skipped residues
]

pytestmark = pytest.mark.skipif(not TEST.is_dir(), reason="shared data not available")


@pytest.fixture(scope="module")
def ms():
    return MappingSet.load("martini3")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("chains")
    for name in CHAINS:
        os.symlink(TEST / f"{name}.pdb.gz", folder / f"{name}.pdb.gz")
    # one chain with water and an ion appended (dropped and counted), one broken file
    lines = gzip.open(TEST / "bm5_1XU1_l_b_B.pdb.gz", "rt").read().splitlines()
    body = [l for l in lines if l.startswith("ATOM")]
    extra = ["HETATM 9001  O   HOH W   1      10.000  10.000  10.000  1.00  0.00           O",
             "HETATM 9002  O   HOH W   2      13.000  10.000  10.000  1.00  0.00           O",
             "HETATM 9003 NA    NA I   1      16.000  10.000  10.000  1.00  0.00          NA"]
    (folder / "solvated.pdb").write_text("\n".join(body + ["TER"] + extra + ["END"]) + "\n")
    # a heavy atom the mapping does not know: that residue is left out, not the chain
    renamed = [l[:12] + " XX1" + l[16:] if l[12:16] == " CB " and l[22:26] == "  80" else l for l in body]
    assert renamed != body
    (folder / "unknown_atom.pdb").write_text("\n".join(renamed + ["END"]) + "\n")
    (folder / "broken.pdb.gz").write_bytes(gzip.compress(b"ATOM      1  N   ALA A   1      1.0")[:20])
    out = tmp_path_factory.mktemp("out") / "data.npz"
    report = build_dataset(folder, "martini3", out, workers=2)
    return report, ProteinDataset(out)


def _by_name(ds, name):
    return ds.chain(list(ds.chain_names).index(name))


def _reconstruct(ds, c):
    """Atom positions rebuilt from bead positions + stored slot vectors (float64)."""
    a, types = ds.arrays, c["bead_type"].astype(np.int64)
    t = lambda x: torch.as_tensor(np.asarray(x))
    pos = reconstruct(t(c["bead_pos"].astype(np.float64))[None], t(c["slot_vector"].astype(np.float64))[None],
                      t(a["type_slot_anchor"][types].astype(np.int64)), t(a["type_slot_level"][types].astype(np.int64)),
                      t(c["slot_atom"].astype(np.int64)), t(a["type_slot_weight"][types].astype(np.float64)),
                      len(c["atom_pos"]))
    return pos[0].numpy()


def test_report_and_file(built):
    report, ds = built
    assert ds.n_chains == len(CHAINS) + 2  # the solvated and renamed copies are chains too
    assert report.n_rejected_residues == 1 and "XX1" in report.rejected_residues[0]
    assert len(_by_name(ds, "unknown_atom")["residue_name"]) == len(_by_name(ds, "solvated")["residue_name"]) - 1
    assert [f for f, _ in report.failed] == ["broken.pdb.gz"] and "decompress" in report.failed[0][1]
    assert report.dropped_residues == {"HOH": 2, "NA": 1}
    assert report.n_hydrogens_dropped > 200  # pb_7ZYS_KNR_A carries hydrogens
    assert report.n_chains == ds.n_chains and report.n_beads == ds.n_beads()
    stored = ds.report
    assert stored["n_beads"] == report.n_beads and stored["failed"][0][0] == "broken.pdb.gz"
    assert "chains" in report.summary() and "incomplete" in report.summary()
    a = ds.arrays
    n, m, s = ds.n_beads(), a["atom_offsets"][-1], ds.max_slots
    assert a["bead_pos"].shape == (n, 3) and a["bead_pos"].dtype == np.float32
    assert a["slot_vector"].shape == (n, s, 3) and a["slot_atom"].dtype == np.int32
    assert a["bead_type"].dtype == np.int16 and a["atom_pos"].shape == (m, 3)
    assert a["chain_names"].dtype.kind == "U" and ds.mapping_hash == MappingSet.load("martini3").files_hash
    assert int(a["n_bead_types"]) == ds.n_bead_types == len(a["type_name"])
    for kind in ("bead", "atom", "bond", "angle", "residue"):
        assert a[f"{kind}_offsets"].shape == (ds.n_chains + 1,)
    # hydrogens gone, atom indices chain-local
    c = _by_name(ds, "pb_7ZYS_KNR_A")
    assert c["slot_atom"].max() < len(c["atom_pos"]) and c["bonds"].max() < len(c["atom_pos"])


def test_vectors_rebuild_atoms(built):
    _, ds = built
    for i in range(ds.n_chains):
        c = ds.chain(i)
        pos = _reconstruct(ds, c)
        loss_atoms = np.unique(c["slot_atom"][c["bead_loss_mask"]])
        loss_atoms = loss_atoms[loss_atoms >= 0]
        err = np.linalg.norm(pos[loss_atoms] - c["atom_pos"][loss_atoms], axis=1)
        assert len(loss_atoms) > 0.9 * len(c["atom_pos"]) and err.max() < 1e-3, c["name"]
        # beads are the heavy-atom mass centres: bead 0 (BB of the first residue) near its CA
        assert np.linalg.norm(c["bead_pos"][0] - c["atom_pos"][c["slot_atom"][0, 0]]) < 2.0


def test_incomplete_and_skipped_residues(built, ms):
    report, ds = built
    n_incomplete = n_skipped = 0
    for name in CHAINS:
        c = _by_name(ds, name)
        traj = load_structure(TEST / f"{name}.pdb.gz", frames=0)
        traj = traj.atom_slice(traj.topology.select("not element H"))
        sm = SystemMapping.from_atomistic(traj.topology, ms, incomplete="skip")
        kept = Counter(zip(c["residue_name"].tolist(), c["residue_seq"].tolist()))
        incomplete = {(r.mapping.name, traj.topology.residue(r.aa_residue).resSeq) for r in sm.incomplete_residues}
        for key in incomplete:  # in the input, out of the loss
            rows = np.nonzero((c["residue_name"] == key[0]) & (c["residue_seq"] == key[1]))[0]
            assert len(rows) and not c["residue_complete"][rows].any()
            assert not c["bead_loss_mask"][np.isin(c["bead_residue"], rows)].any()
            assert np.isin(c["bead_residue"], rows).sum() > 0
        assert (~c["residue_complete"]).sum() == len(incomplete)
        assert c["bead_loss_mask"].sum() == c["residue_complete"][c["bead_residue"]].sum()
        for label in sm.skipped_residues:  # e.g. "ARG 529 chain A": absent from the input
            resname, seq = label.split()[:2]
            assert kept[(resname, int(seq))] == 0, label
        n_incomplete += len(incomplete)
        n_skipped += len(sm.skipped_residues)
        assert len(c["residue_name"]) == len(sm.residues) and len(c["bead_pos"]) == sm.n_beads
    assert n_incomplete >= 10 and n_skipped >= 5
    assert report.n_skipped_residues == n_skipped + 2  # + the two copies of bm5_1XU1_l_b_B
    assert any(s.startswith("bm5_1AZS_r_u_A: ARG 529") for s in report.skipped_residues)


def test_bonds_and_angles(built):
    _, ds = built
    n_breaks = 0
    for i in range(ds.n_chains):
        c = ds.chain(i)
        x, b = c["atom_pos"], c["bonds"]
        length = np.linalg.norm(x[b[:, 0]] - x[b[:, 1]], axis=1)
        assert 1.2 < length.min() and length.max() < 2.1, c["name"]
        # only loss-complete, reconstructed atoms
        assert c["residue_complete"][c["atom_residue"][b]].all()
        assert np.isin(b, c["slot_atom"][c["slot_atom"] >= 0]).all()
        # peptide bonds: exactly the consecutive complete residues with C-N < 2 Å
        bb = {}
        for r in range(len(c["residue_name"])):
            atoms = np.nonzero((c["atom_residue"] == r) & c["atom_is_backbone"])[0]
            bb[r] = atoms  # N CA C O in topology order
        bond_set = {tuple(p) for p in b.tolist()}
        for r in range(len(c["residue_name"]) - 1):
            if not (c["residue_complete"][r] and c["residue_complete"][r + 1]):
                continue
            cn = (bb[r][2], bb[r + 1][0])
            d = np.linalg.norm(x[cn[0]] - x[cn[1]])
            assert (tuple(sorted(cn)) in bond_set) == (d < 2.0)
            n_breaks += d >= 2.0
        # angles: i-j and j-k bonded, i < k, no duplicates, plausible values
        ang = c["angles"]
        assert {tuple(sorted(p)) for p in ang[:, :2].tolist()} <= bond_set
        assert {tuple(sorted(p)) for p in ang[:, 1:].tolist()} <= bond_set
        assert (ang[:, 0] < ang[:, 2]).all() and len(np.unique(ang, axis=0)) == len(ang)
        u, v = x[ang[:, 0]] - x[ang[:, 1]], x[ang[:, 2]] - x[ang[:, 1]]
        theta = np.degrees(np.arccos((u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)))
        # real structures hold a few strained angles (e.g. 73 deg at CYS 556 of 1AZS)
        assert np.mean((theta > 95) & (theta < 135)) > 0.99 and 60 < theta.min() and theta.max() < 180
    assert n_breaks >= 5
    # disulfides: the only inter-residue bonds between side-chain atoms (bm5_1XU1_l_b_B has 3)
    c = _by_name(ds, "bm5_1XU1_l_b_B")
    b = c["bonds"]
    res = c["atom_residue"][b]
    ss = b[(res[:, 0] != res[:, 1]) & ~c["atom_is_backbone"][b].any(1)]
    assert len(ss) == 3 and (c["residue_name"][c["atom_residue"][ss]] == "CYS").all()
    assert np.allclose(np.linalg.norm(c["atom_pos"][ss[:, 0]] - c["atom_pos"][ss[:, 1]], axis=1), 2.05, atol=0.1)


def test_dihedrals_match_mdtraj(built):
    _, ds = built
    for name in CHAINS:
        c = _by_name(ds, name)
        traj = load_structure(TEST / f"{name}.pdb.gz", frames=0)
        traj = traj.atom_slice(traj.topology.select("not element H"))  # same atom order as the dataset
        assert np.allclose(traj.xyz[0] * 10, c["atom_pos"], atol=1e-4)
        for col, (fn, cols) in enumerate([(md.compute_phi, slice(0, 4)), (md.compute_psi, slice(1, 5))]):
            idx, ref = fn(traj)
            ref = {tuple(q): v for q, v in zip(idx.tolist(), ref[0])}
            rows = np.nonzero(c["bb_dihedral_mask"][:, col])[0]
            ours = np.arctan2(c["bb_dihedral"][rows, 2 * col], c["bb_dihedral"][rows, 2 * col + 1])
            quads = [tuple(q) for q in c["bb_dihedral_atoms"][rows, cols].tolist()]
            assert all(q in ref for q in quads)
            diff = np.angle(np.exp(1j * (np.array([ref[q] for q in quads]) - ours)))
            assert np.abs(diff).max() < 0.01
            # mdtraj also spans chain breaks; ours only real peptide bonds (and complete backbones)
            assert 0.9 * len(ref) < len(rows) <= len(ref)
            sincos = c["bb_dihedral"][rows, 2 * col:2 * col + 2]
            assert np.allclose((sincos ** 2).sum(1), 1, atol=1e-5)
        assert not c["bb_dihedral"][~c["bb_dihedral_mask"].repeat(2, axis=1)].any()


def test_sample_patch(built):
    _, ds = built
    rng = np.random.default_rng(0)
    radius, cutoff = 14.0, 6.0
    seen_loss = 0
    for _ in range(30):
        p = ds.sample_patch(rng, radius=radius, cutoff=cutoff)
        c = ds.chain(p["chain"])
        centre = p["center"]
        d = np.linalg.norm(c["bead_pos"] - centre, axis=1)
        assert set(p["bead_index"].tolist()) == set(np.nonzero(d <= radius)[0].tolist())
        dp = np.linalg.norm(p["bead_pos"], axis=1)  # patch coordinates are centred
        assert dp.max() <= radius + 1e-4
        assert np.array_equal(p["loss_bead"], (d[p["bead_index"]] <= radius - cutoff) & c["bead_loss_mask"][p["bead_index"]])
        seen_loss += p["loss_bead"].sum()
        # atoms: those of the patch beads' slots, renumbered consistently
        assert np.allclose(p["atom_pos"] + centre, c["atom_pos"][p["atom_index"]], atol=1e-4)
        sa, ref = p["slot_atom"], c["slot_atom"][p["bead_index"]]
        assert np.array_equal(sa >= 0, ref >= 0)
        assert np.array_equal(p["atom_index"][sa[sa >= 0]], ref[ref >= 0])
        assert set(p["atom_index"].tolist()) == set(ref[ref >= 0].tolist())
        # bonds/angles: atoms owned by loss beads only; lengths as in the chain
        loss_atoms = set(sa[p["loss_bead"]][sa[p["loss_bead"]] >= 0].tolist())
        assert set(p["bonds"].ravel().tolist()) <= loss_atoms and set(p["angles"].ravel().tolist()) <= loss_atoms
        lp = np.linalg.norm(p["atom_pos"][p["bonds"][:, 0]] - p["atom_pos"][p["bonds"][:, 1]], axis=1)
        gb = p["atom_index"][p["bonds"]]
        lc = np.linalg.norm(c["atom_pos"][gb[:, 0]] - c["atom_pos"][gb[:, 1]], axis=1)
        assert np.allclose(lp, lc, atol=1e-4)
        assert {tuple(b) for b in gb.tolist()} <= {tuple(b) for b in c["bonds"].tolist()}
        # every chain bond whose atoms are all loss atoms of this patch is kept
        inside = np.isin(c["bonds"], p["atom_index"][p["atom_loss"]]).all(1)
        assert inside.sum() == len(p["bonds"])
        # dihedrals only on loss beads, with their atoms in the patch
        assert not (p["bb_dihedral_mask"] & ~p["loss_bead"][:, None]).any()
        rows = np.nonzero(p["bb_dihedral_mask"][:, 0])[0]
        assert (p["bb_dihedral_atoms"][rows, :4] >= 0).all()
    assert seen_loss > 0


def test_collate_and_reconstruct(built):
    _, ds = built
    rng = np.random.default_rng(1)
    patches = [ds.sample_patch(rng, radius=16.0, cutoff=8.0) for _ in range(4)]
    batch = collate(patches)
    assert batch["n_graphs"] == 4 and batch["n_atoms"] == sum(len(p["atom_pos"]) for p in patches)
    assert batch["bead_pos"].dtype == torch.float32 and batch["slot_atom"].dtype == torch.int64
    assert torch.equal(torch.bincount(batch["graph_index"]), torch.tensor([len(p["bead_pos"]) for p in patches]))
    assert batch["bonds"].max() < batch["n_atoms"] and batch["slot_atom"].max() < batch["n_atoms"]
    pos = reconstruct(batch["bead_pos"][None].double(), batch["slot_vector"][None].double(), batch["slot_anchor"],
                      batch["slot_level"], batch["slot_atom"], batch["slot_weight"].double(), batch["n_atoms"])[0]
    loss = batch["atom_loss"]
    assert loss.sum() > 0
    assert (pos[loss] - batch["atom_pos"][loss].double()).norm(dim=1).max() < 1e-3
    # bonds of the batch point at the right patch: lengths stay bond lengths
    b = batch["bonds"]
    length = (batch["atom_pos"][b[:, 0]] - batch["atom_pos"][b[:, 1]]).norm(dim=1)
    assert length.min() > 1.2 and length.max() < 2.1
    assert torch.equal(batch["atom_graph_index"][b[:, 0]], batch["atom_graph_index"][b[:, 1]])

    full = ds.full_chain_batch(0)
    c = ds.chain(0)
    assert full["n_graphs"] == 1 and len(full["bead_pos"]) == len(c["bead_pos"])
    assert torch.equal(full["loss_bead"], torch.from_numpy(c["bead_loss_mask"]))
    assert len(full["bonds"]) == len(c["bonds"])  # every stored bond is a loss bond on the full chain


def test_cli(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="herobm")
    add_dataset_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "small.npz"
    args = parser.parse_args(["dataset", str(TEST), "-m", "martini3", "-o", str(out), "--limit", "2",
                              "--workers", "1", "--no-progress"])
    assert args.func(args) == 0
    assert "2 chains from 2 files" in capsys.readouterr().out
    assert ProteinDataset(out).n_chains == 2 and not list(tmp_path.glob(".small.npz*"))
    assert json.loads(str(np.load(out)["report"]))["n_chains"] == 2

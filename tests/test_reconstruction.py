"""Hierarchical reconstruction on real chains: the slot vectors of a structure rebuild
that structure exactly, frames batch, the torch code scripts, and ``recenter`` puts
atoms back onto their beads.
"""

from __future__ import annotations

import os
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch

from openmm_herobm.mapping import MappingSet, SystemMapping
from openmm_herobm.reconstruction import place_slots, reconstruct, recenter

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("HEROBM_SHARED_DATA", REPO.parent / "shared" / "data"))
TEST_CHAINS = DATA / "proteins" / "test"
pytestmark = [pytest.mark.skipif(not TEST_CHAINS.is_dir(), reason=f"shared data not found at {DATA}"),
              pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")]

# 10 chains spread over the sorted test list (every 16th file): 89 to 725 residues, with
# hydrogens (pb_7OU8) and with real missing side-chain atoms (1F51, 1XU1, 7OU8, 7UAS,
# where whole beads are missing and residues are skipped)
ALL_CHAINS = sorted(p.name[: -len(".pdb.gz")] for p in TEST_CHAINS.glob("*.pdb.gz")) if TEST_CHAINS.is_dir() else []
CHAINS = ALL_CHAINS[::16][:10]
SETS = ["martini3", "ca"]


@pytest.fixture(scope="module")
def mapping_sets():
    return {name: MappingSet.load(name) for name in SETS}


_cache: dict = {}


def system(name: str, set_name: str, mapping_sets):
    key = (name, set_name)
    if key not in _cache:
        traj = mdtraj.load(str(TEST_CHAINS / f"{name}.pdb.gz"), standard_names=False)
        sm = SystemMapping.from_atomistic(traj.topology, mapping_sets[set_name], incomplete="skip")
        _cache[key] = (traj, sm, traj.xyz[0].astype(np.float64) * 10.0)  # A
    return _cache[key]


def tables(sm):
    slot_atom = np.where(sm.slot_valid, sm.slot_atom, -1)
    return (torch.from_numpy(sm.slot_anchor), torch.from_numpy(sm.slot_level),
            torch.from_numpy(slot_atom), torch.from_numpy(sm.slot_weight)), slot_atom


def rebuild(sm, xyz, fn=reconstruct):
    """Atoms (F, M, 3) from the structure's own beads and slot vectors."""
    xyz = xyz if xyz.ndim == 3 else xyz[None]
    beads = torch.from_numpy(sm.map(xyz))
    vectors = torch.from_numpy(sm.slot_vectors(xyz))
    (anchor, level, atom, weight), _ = tables(sm)
    return fn(beads, vectors, anchor, level, atom, weight, sm.n_atoms).numpy()


def test_sample():
    assert len(CHAINS) == 10
    assert {"bm5_1F51_l_b_B", "pb_7OU8_1XI_A"} <= set(CHAINS)


@pytest.mark.parametrize("set_name", SETS)
@pytest.mark.parametrize("name", CHAINS)
def test_round_trip(mapping_sets, name, set_name):
    traj, sm, xyz = system(name, set_name, mapping_sets)
    out = rebuild(sm, xyz)[0]
    _, slot_atom = tables(sm)
    covered = np.unique(slot_atom[slot_atom >= 0])
    err = np.linalg.norm(out[covered] - xyz[covered], axis=1).max()
    assert err < 1e-4, f"{name}/{set_name}: max error {err:.2e} A"

    # coverage: the heavy atoms of every mapped residue are rebuilt, except optional ones
    # (OXT) and atoms whose anchor is missing from the structure
    mapped = {r.aa_residue for r in sm.residues}
    heavy = [a.index for a in traj.topology.atoms if a.element.symbol != "H" and a.residue.index in mapped]
    cov = set(covered.tolist())
    missing_ok = {r.aa_residue for r in sm.incomplete_residues}
    uncovered = [traj.topology.atom(i) for i in heavy if i not in cov]
    for atom in uncovered:
        assert atom.name == "OXT" or atom.residue.index in missing_ok, f"{name}/{set_name}: {atom} not rebuilt"
    fraction = 1 - len(uncovered) / len(heavy)
    assert fraction >= 0.99, f"{name}/{set_name}: only {fraction:.4f} of the heavy atoms are rebuilt"
    # hydrogens are never rebuilt
    assert not any(traj.topology.atom(i).element.symbol == "H" for i in cov)
    # skipped residues (whole bead missing) stay rare: the data keeps chains with <= 10% incomplete residues
    assert len(sm.skipped_residues) <= 0.1 * traj.n_residues
    if set_name == "ca":
        assert not sm.skipped_residues  # every residue has its CA


def test_sample_has_missing_atoms(mapping_sets):
    skipped = sum(len(system(n, "martini3", mapping_sets)[1].skipped_residues) for n in CHAINS)
    incomplete = sum(len(system(n, "martini3", mapping_sets)[1].incomplete_residues) for n in CHAINS)
    assert skipped > 10 and incomplete > 10


@pytest.mark.parametrize("set_name", SETS)
def test_batched_frames_equal_single_frames(mapping_sets, set_name):
    _, sm, xyz = system("bm5_1F51_l_b_B", set_name, mapping_sets)
    rng = np.random.default_rng(3)
    frames = np.stack([xyz, xyz + rng.normal(0, 0.3, xyz.shape), xyz + rng.normal(0, 1.0, xyz.shape)])
    batched = rebuild(sm, frames)
    assert batched.shape == (3, sm.n_atoms, 3)
    _, slot_atom = tables(sm)
    covered = np.unique(slot_atom[slot_atom >= 0])
    for k in range(3):
        single = rebuild(sm, frames[k])[0]
        np.testing.assert_allclose(batched[k], single, rtol=0, atol=1e-10)
        np.testing.assert_allclose(batched[k][covered], frames[k][covered], rtol=0, atol=1e-4)


@pytest.mark.parametrize("set_name", SETS)
def test_torchscript_equals_eager(mapping_sets, set_name):
    _, sm, xyz = system("pb_7OU8_1XI_A", set_name, mapping_sets)
    scripted = torch.jit.script(reconstruct)
    rng = np.random.default_rng(5)
    frames = np.stack([xyz, xyz + rng.normal(0, 0.5, xyz.shape)])
    # arbitrary vectors too (a model's output), not only the exact ones
    beads = torch.from_numpy(sm.map(frames))
    vectors = torch.from_numpy(sm.slot_vectors(frames)) + torch.from_numpy(rng.normal(0, 0.2, (2,) + sm.slot_atom.shape + (3,)))
    (anchor, level, atom, weight), _ = tables(sm)
    eager = reconstruct(beads, vectors, anchor, level, atom, weight, sm.n_atoms)
    script = scripted(beads, vectors, anchor, level, atom, weight, sm.n_atoms)
    assert torch.equal(eager, script)
    # float32, as a deployed model would run
    e32 = reconstruct(beads.float(), vectors.float(), anchor, level, atom, weight, sm.n_atoms)
    s32 = scripted(beads.float(), vectors.float(), anchor, level, atom, weight, sm.n_atoms)
    assert s32.dtype == torch.float32 and torch.equal(e32, s32)


def test_shared_atom_is_weighted_mean_of_bead_estimates(mapping_sets):
    """PHE CD1 belongs to SC1 (1/3) and SC2 (2/3): moving SC1's estimate by d moves CD1 by d/3."""
    traj, sm, xyz = system("bm5_1AZS_l_b_B", "martini3", mapping_sets)
    res = next(r for r in sm.residues if r.mapping.name == "PHE" and not r.missing)
    cd1 = res.atoms[res.mapping.atom_index("CD1")]
    beads = torch.from_numpy(sm.map(xyz)[None])
    vectors = torch.from_numpy(sm.slot_vectors(xyz)[None])
    (anchor, level, atom, weight), slot_atom = tables(sm)
    d = torch.tensor([0.3, -0.6, 0.9], dtype=torch.float64)
    moved = {}
    for bead, share in (("SC1", 1 / 3), ("SC2", 2 / 3)):
        b = res.beads[res.mapping.beads.index(bead)]
        s = int(np.nonzero(slot_atom[b] == cd1)[0][0])
        assert sm.slot_weight[b, s] == pytest.approx(share)
        v = vectors.clone()
        v[0, b, s] += d
        out = reconstruct(beads, v, anchor, level, atom, weight, sm.n_atoms)[0].numpy()
        np.testing.assert_allclose(out[cd1] - xyz[cd1], share * d.numpy(), atol=1e-9)
        moved[bead] = out
    # no atom is anchored on CD1: nothing else moves
    others = np.setdiff1d(np.unique(slot_atom[slot_atom >= 0]), [cd1])
    np.testing.assert_allclose(moved["SC1"][others], xyz[others], atol=1e-4)


def test_levels_follow_anchors(mapping_sets):
    """place_slots: a level-L slot is its anchor's position plus its own vector."""
    _, sm, xyz = system("bm5_2X9A_r_b_A", "martini3", mapping_sets)
    beads = torch.from_numpy(sm.map(xyz)[None])
    vectors = torch.from_numpy(np.random.default_rng(1).normal(0, 1, (1,) + sm.slot_atom.shape + (3,)))
    pos = place_slots(beads, vectors, torch.from_numpy(sm.slot_anchor), torch.from_numpy(sm.slot_level))[0].numpy()
    v, b = vectors[0].numpy(), beads[0].numpy()
    assert sm.slot_level.max() >= 3
    for n in range(sm.n_beads):
        for s in range(sm.slot_atom.shape[1]):
            if sm.slot_level[n, s] == 0:
                continue
            a = sm.slot_anchor[n, s]
            base = b[n] if a < 0 else pos[n, a]
            assert sm.slot_level[n, s] == (1 if a < 0 else sm.slot_level[n, a] + 1)
            np.testing.assert_allclose(pos[n, s], base + v[n, s], atol=1e-12)


# ------------------------------------------------------------------------- recenter
def _weights(sm):
    w = sm.weights.tocoo()
    return (torch.from_numpy(w.row.astype(np.int64)), torch.from_numpy(w.col.astype(np.int64)),
            torch.from_numpy(w.data.astype(np.float64)))


@pytest.mark.parametrize("set_name", SETS)
@pytest.mark.parametrize("name", ["bm5_1AZS_l_b_B", "bm5_1F51_l_b_B", "pb_7OU8_1XI_A"])
def test_recenter(mapping_sets, name, set_name):
    _, sm, xyz = system(name, set_name, mapping_sets)
    target = sm.map(xyz)
    rng = np.random.default_rng(11)
    noisy = np.stack([xyz + rng.normal(0, 0.3, xyz.shape), xyz + rng.normal(0, 0.3, xyz.shape)])
    before = np.abs(sm.map(noisy) - target).max()
    assert before > 0.1
    rows, cols, vals = _weights(sm)
    out = recenter(torch.from_numpy(noisy), torch.from_numpy(np.stack([target, target])), rows, cols, vals).numpy()
    err = np.abs(sm.map(out) - target).max()
    assert err < 1e-4, f"{name}/{set_name}: beads off by {err:.2e} A after recenter"
    # only atoms that carry weight move, and by little (a rigid shift per bead, ~0.3/sqrt(n) A)
    weighted = np.unique(sm.weights.tocoo().col)
    still = np.setdiff1d(np.arange(sm.n_atoms), weighted)
    np.testing.assert_array_equal(out[:, still], noisy[:, still])
    shift = np.linalg.norm(out - noisy, axis=-1)
    assert shift.max() < 1.5
    if name == "bm5_1F51_l_b_B":  # the scripted version agrees
        scripted = torch.jit.script(recenter)
        out_s = scripted(torch.from_numpy(noisy), torch.from_numpy(np.stack([target, target])), rows, cols, vals, 20)
        np.testing.assert_allclose(out_s.numpy(), out, rtol=0, atol=1e-12)


def test_recenter_one_step_exact_for_unshared_beads(mapping_sets):
    _, sm, xyz = system("bm5_1AZS_l_b_B", "martini3", mapping_sets)
    target = sm.map(xyz)
    noisy = xyz + np.random.default_rng(2).normal(0, 0.3, xyz.shape)
    rows, cols, vals = _weights(sm)
    out = recenter(torch.from_numpy(noisy[None]), torch.from_numpy(target[None]), rows, cols, vals, iterations=1)[0]
    err = np.abs(sm.map(out.numpy()) - target).max(axis=1)
    shared_atom = np.asarray((sm.weights > 0).sum(axis=0)).ravel() > 1
    shares = np.asarray((sm.weights[:, shared_atom] > 0).sum(axis=1)).ravel() > 0
    assert shares.any() and (~shares).any()
    assert err[~shares].max() < 1e-9
    assert err[shares].max() > 1e-3  # ring beads need the iterations

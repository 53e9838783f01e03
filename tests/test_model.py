"""The HEroBM network and its deployed form, on real CG inputs (martinize2 beads of real chains).

The properties are those of the architecture, so an untrained network (fixed seed) is
enough: equivariance, strict locality, chunked == unchunked, TorchScript == eager, and
mapping/model mismatches caught at load time.
"""

import copy
import gzip
import json
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import torch
from e3nn import o3

from openmm_herobm.errors import HeroBMError
from openmm_herobm.mapping import MappingSet, SystemMapping
from openmm_herobm.model import METADATA, ModelConfig, build_model, load_model, predict_chunked, radius_edges

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"


@pytest.fixture(scope="module")
def mapping_set():
    return MappingSet.load("martini3")


@pytest.fixture(scope="module")
def model(mapping_set):
    torch.manual_seed(0)
    m = build_model(mapping_set, ModelConfig())
    # scale the readout so outputs have realistic magnitudes (a few Angstrom)
    with torch.no_grad():
        m.network.slot_mix.weight.mul_(20.0)
    return m.eval()


@pytest.fixture(scope="module")
def ubiquitin(mapping_set):
    """Real martinize2 beads of ubiquitin (Angstrom) and their system mapping."""
    traj = mdtraj.load(str(EXAMPLES / "1ubq_martinize2_cg.pdb"))
    system = SystemMapping.from_cg(traj.topology, mapping_set)
    pos = torch.as_tensor(traj.xyz[0, system.cg_input_index] * 10.0)
    return system, pos, torch.as_tensor(system.bead_types)


def _chain_beads(path, mapping_set):
    with gzip.open(path, "rt") as f:
        text = f.read()
    tmp = Path("/tmp") / f"herobm_test_{Path(path).stem}"
    tmp.write_text(text)
    traj = mdtraj.load_pdb(str(tmp))
    system = SystemMapping.from_atomistic(traj.topology, mapping_set, incomplete="skip")
    return torch.as_tensor(system.map(traj.xyz[0] * 10.0), dtype=torch.float32), torch.as_tensor(system.bead_types)


def test_equivariance_rotation_reflection_translation(model, ubiquitin):
    system, pos, types = ubiquitin
    slot_atom = torch.as_tensor(np.where(system.slot_valid, system.slot_atom, -1))
    with torch.no_grad():
        atoms, dih = model(pos, types, slot_atom, system.n_atoms)
        assert atoms.abs().max() < 1e3 and atoms.std() > 1.0
        for sign in (1.0, -1.0):  # proper rotation, then rotation + inversion
            rot = o3.rand_matrix() * sign
            shift = torch.tensor([3.0, -7.0, 11.0])
            atoms2, dih2 = model(pos @ rot.T + shift, types, slot_atom, system.n_atoms)
            assert (atoms2 - (atoms @ rot.T + shift)).abs().max() < 1e-4
            # cos(phi), cos(psi) are invariant; sin flips sign under inversion
            assert (dih2[:, [1, 3]] - dih[:, [1, 3]]).abs().max() < 1e-4
            assert (dih2[:, [0, 2]] - sign * dih[:, [0, 2]]).abs().max() < 1e-4


def test_mirror_image_is_distinguished(model, ubiquitin):
    """A chiral environment and its mirror image give different (mirrored) outputs."""
    system, pos, types = ubiquitin
    with torch.no_grad():
        _, dih = model.predict(pos, types, torch.arange(len(pos)))
    assert dih[:, [0, 2]].abs().max() > 1e-3  # pseudo-scalar channels are alive


def test_locality(model, ubiquitin):
    """Moving one bead changes only the beads within one cutoff of its old or new place."""
    system, pos, types = ubiquitin
    centers = torch.arange(len(pos))
    with torch.no_grad():
        v1, d1 = model.predict(pos, types, centers)
        moved = pos.clone()
        k = 40
        moved[k] += torch.tensor([25.0, 0.0, 0.0])
        v2, d2 = model.predict(moved, types, centers)
    near = (torch.cdist(pos, pos[k:k + 1]).squeeze(1) < model.cutoff) | \
           (torch.cdist(pos, moved[k:k + 1]).squeeze(1) < model.cutoff)
    changed = (v2 - v1).abs().amax(dim=(1, 2)) > 0
    assert changed[near].any()
    assert not changed[~near].any()
    assert (d2[~near] == d1[~near]).all()


def test_radius_edges_match_brute_force(ubiquitin):
    _, pos, _ = ubiquitin
    c, n = radius_edges(pos, torch.arange(len(pos)), 8.0)
    d = torch.cdist(pos, pos)
    expected = ((d < 8.0) & ~torch.eye(len(pos), dtype=torch.bool)).sum()
    assert len(c) == expected
    assert (d[c, n] < 8.0).all() and (c != n).all()


def test_chunked_equals_unchunked(model, mapping_set):
    """A real 2,000+ bead chain predicted in 20 A chunks equals the one-shot prediction.

    In double precision the two agree to rounding (1e-9 A): the chunks see exactly the
    same neighbours.  In float32 they differ only by summation order (< 1e-4 A here,
    with outputs scaled to several A).
    """
    path = sorted((DATA / "proteins" / "test").glob("*.pdb.gz"), key=lambda p: -p.stat().st_size)[0]
    pos, types = _chain_beads(path, mapping_set)
    assert len(pos) > 1000
    with torch.no_grad():
        v32, _ = predict_chunked(model, pos, types, model.cutoff, max_unchunked=10 ** 9)
        v32_chunk, _ = predict_chunked(model, pos, types, model.cutoff, chunk=20.0, max_unchunked=0)
        assert (v32 - v32_chunk).abs().max() < 1e-4
        double = copy.deepcopy(model).double()
        v_all, d_all = predict_chunked(double, pos.double(), types, model.cutoff, max_unchunked=10 ** 9)
        v_chunk, d_chunk = predict_chunked(double, pos.double(), types, model.cutoff, chunk=20.0, max_unchunked=0)
    assert (v_all - v_chunk).abs().max() < 1e-9
    assert (d_all - d_chunk).abs().max() < 1e-9


def test_torchscript_equals_eager_and_carries_metadata(model, mapping_set, ubiquitin, tmp_path):
    system, pos, types = ubiquitin
    slot_atom = torch.as_tensor(np.where(system.slot_valid, system.slot_atom, -1))
    scripted = torch.jit.script(model)
    meta = {"mapping_set": mapping_set.name, "mapping_hash": mapping_set.files_hash, "cutoff": model.cutoff,
            "molecules": sorted(m.cg_residue_name for m in mapping_set.molecules)}
    path = tmp_path / "m.pt"
    torch.jit.save(scripted, str(path), _extra_files={METADATA: json.dumps(meta)})
    loaded = load_model(path)
    with torch.no_grad():
        a1, d1 = model(pos, types, slot_atom, system.n_atoms)
        a2, d2 = loaded.module(pos, types, slot_atom, system.n_atoms)
    assert (a1 - a2).abs().max() < 1e-5 and (d1 - d2).abs().max() < 1e-5
    assert loaded.cutoff == model.cutoff


def test_mapping_mismatch_is_refused(model, mapping_set, tmp_path):
    meta = {"mapping_set": "martini3", "mapping_hash": "0" * 64, "cutoff": 8.0, "molecules": []}
    path = tmp_path / "stale.pt"
    torch.jit.save(torch.jit.script(model), str(path), _extra_files={METADATA: json.dumps(meta)})
    with pytest.raises(HeroBMError, match="trained with mapping set martini3"):
        load_model(path)
    with pytest.raises(HeroBMError, match="neither a file nor a shipped model"):
        load_model(tmp_path / "missing.pt")
    bad = tmp_path / "junk.pt"
    bad.write_bytes(b"not a model")
    with pytest.raises(HeroBMError, match="not a deployed HEroBM model"):
        load_model(bad)

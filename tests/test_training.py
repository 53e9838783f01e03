"""Training on real chains: loss decreases, resume is exact, deploy writes a loadable one-file model."""

from pathlib import Path

import numpy as np
import pytest
import torch

from openmm_herobm.cli.main import main
from openmm_herobm.model import load_model
from openmm_herobm.training import TrainConfig, build_dataset, train
from openmm_herobm.training.loss import LossWeights, backmapping_loss, bond_angles, bond_lengths
from openmm_herobm.training.side_chains import build_side_chain_library

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "proteins"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    files = sorted((DATA / "val").glob("*.pdb.gz"))[:4]
    build_dataset(files[:3], output=root / "train.npz", workers=1)
    build_dataset(files[3:], output=root / "val.npz", workers=1)
    return root


def config(datasets, out, steps):
    return TrainConfig.from_dict({
        "train": str(datasets / "train.npz"), "val": str(datasets / "val.npz"), "output": str(out),
        "steps": steps, "epoch_steps": 3, "patches_per_step": 2, "val_chains": 1, "threads": 1, "seed": 3,
        "lr": 0.003, "model": {"channels": 8, "hidden_mul": 8, "embed_dim": 8, "edge_dim": 16}})


def test_loss_terms_on_real_geometry():
    """Bond and angle terms are zero inside the tolerance and grow outside it."""
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.5, 0.0, 0.0], [2.0, 1.4, 0.0]])
    bonds, angles = torch.tensor([[0, 1], [1, 2]]), torch.tensor([[0, 1, 2]])
    w = LossWeights()
    dih = torch.zeros(1, 4)
    mask = torch.zeros(1, 2, dtype=torch.bool)
    same = backmapping_loss(pos, pos, torch.ones(3, dtype=torch.bool), bonds, angles, dih, dih, mask, w)
    assert same["loss"].item() == 0.0
    within = pos.clone()
    within[1, 0] += 0.01  # 0.01 A bond error: inside the 0.02 A tolerance
    t = backmapping_loss(within, pos, torch.ones(3, dtype=torch.bool), bonds, angles, dih, dih, mask, w)
    assert t["bond"].item() == 0.0 and t["position"].item() > 0
    beyond = pos.clone()
    beyond[1, 0] += 0.2
    t2 = backmapping_loss(beyond, pos, torch.ones(3, dtype=torch.bool), bonds, angles, dih, dih, mask, w)
    assert t2["bond"].item() > 0 and t2["angle"].item() > 0
    assert bond_lengths(pos, bonds)[0].item() == pytest.approx(1.5)
    assert bond_angles(pos, angles)[0].item() == pytest.approx(np.arccos(np.dot([-1.5, 0, 0], [0.5, 1.4, 0])
                                                                         / (1.5 * np.hypot(0.5, 1.4))), abs=1e-6)


def test_train_resume_is_exact_and_deploy_loads(datasets, tmp_path):
    straight = config(datasets, tmp_path / "straight", 6)
    train(straight, progress=False)
    resumed = config(datasets, tmp_path / "resumed", 6)
    train(resumed, progress=False, stop_at=3)  # an interrupted session ...
    assert torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["step"] == 3
    train(resumed, resume=True, progress=False)  # ... continued
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    log = (tmp_path / "straight" / "log.csv").read_text().splitlines()
    assert log[0].startswith("step,epoch") and len(log) == 3  # header + 2 epochs
    first, last = (float(line.split(",")[3]) for line in (log[1], log[2]))
    assert last < first  # the loss goes down on real data
    out = tmp_path / "tiny.pt"
    assert main(["deploy", str(tmp_path / "straight" / "best.pt"), "-o", str(out)]) == 0
    model = load_model(out)
    assert model.metadata["training"]["steps"] in (3, 6) and model.metadata["mapping_set"] == "martini3"
    assert model.side_chains is None
    # a protein model can carry a side-chain library (scripts/build_side_chain_library.py writes one)
    chain = sorted((DATA / "train").glob("*.pdb.gz"))[0]
    library = build_side_chain_library([chain], "martini3")
    (tmp_path / "sc.npz").write_bytes(library.to_bytes())
    with_library = tmp_path / "tiny_sc.pt"
    assert main(["deploy", str(tmp_path / "straight" / "best.pt"), "-o", str(with_library),
                 "--side-chains", str(tmp_path / "sc.npz")]) == 0
    model = load_model(with_library)
    assert len(model.side_chains) == len(library) > 0
    assert model.metadata["side_chains"]["entries"] == len(library)
    (tmp_path / "bad.npz").write_bytes(b"no library")
    assert main(["deploy", str(tmp_path / "straight" / "best.pt"), "-o", str(tmp_path / "bad.pt"),
                 "--side-chains", str(tmp_path / "bad.npz")]) != 0
    assert not (tmp_path / "bad.pt").exists()


def test_train_rejects_bad_config(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("train: x.npz\nlearning_rate: 0.1\n")
    assert main(["train", str(cfg)]) == 2
    assert "learning_rate" in capsys.readouterr().err
    cfg.write_text("train: /nonexistent/train.npz\nval: /nonexistent/val.npz\noutput: " + str(tmp_path / "o") + "\n")
    assert main(["train", str(cfg), "--no-progress"]) == 2
    assert "train.npz" in capsys.readouterr().err

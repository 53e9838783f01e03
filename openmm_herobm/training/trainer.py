"""``herobm train CONFIG.yaml``: train a HEroBM model on patches of real structures.

Cheap steps on 2 CPU cores: each step draws spherical patches (``patch_radius``) from
random chains and predicts only the *loss beads* (within ``patch_radius - cutoff`` of
the patch centre), whose whole cutoff sphere lies inside the patch; a strictly local
model sees there exactly what it would see on the full chain.

Every ``epoch_steps`` steps the model is validated on whole validation chains; the best
checkpoint is kept (``best.pt``), the last one too (``last.pt``, for ``--resume``), and
a line goes to ``log.csv``.  Seeds are fixed; a resumed run continues the same random
streams.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import yaml

from ..errors import HeroBMError
from ..mapping import MappingSet
from ..model import HEroBM, ModelConfig, build_model, radius_edges
from .dataset import ProteinDataset, collate
from .loss import LossWeights, backmapping_loss


@dataclass
class TrainConfig:
    train: str = "train.npz"
    val: str = "val.npz"
    mapping: str = "martini3"
    output: str = "runs/martini3_protein"
    steps: int = 20000
    epoch_steps: int = 500
    max_hours: float = 0.0  # stop (and keep a resumable checkpoint) after this wall time; 0 = no limit
    patches_per_step: int = 6
    patch_radius: float = 18.0
    lr: float = 3e-3
    lr_final: float = 1e-4
    weight_decay: float = 0.0
    bead_noise: float = 0.0  # Angstrom, Gaussian noise on input beads (robustness to CG simulations)
    init: str = ""  # start from the weights of this checkpoint (fine-tuning); same model options
    val_chains: int = 40
    seed: int = 0
    threads: int = 2
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossWeights = field(default_factory=LossWeights)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except OSError as exc:
            raise HeroBMError(f"{path}: cannot read training config ({exc.strerror})") from None
        return cls.from_dict(data, str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = "config") -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise HeroBMError(f"{source}: unknown training option(s) {sorted(unknown)}; known: {sorted(known)}")
        data = dict(data)
        model = ModelConfig(**data.pop("model", {}) or {})
        loss = LossWeights(**data.pop("loss", {}) or {})
        return cls(**data, model=model, loss=loss)


def forward_batch(model: HEroBM, batch: dict, noise: float = 0.0, generator: torch.Generator | None = None):
    """Predict the loss beads of a collated batch and rebuild their atoms.

    Returns (atom positions (M, 3), dihedrals of the loss beads, indices of the loss beads).
    """
    pos = batch["bead_pos"]
    if noise > 0:
        pos = pos + noise * torch.randn(pos.shape, generator=generator)
    centers = torch.nonzero(batch["loss_bead"], as_tuple=True)[0]
    edge_center, edge_neighbor = radius_edges(pos, centers, model.cutoff)
    # beads of different patches are far apart in no sense (each patch is centred on
    # the origin): keep only edges inside one patch
    same = batch["graph_index"][centers[edge_center]] == batch["graph_index"][edge_neighbor]
    vectors_c, dihedrals = model.network(pos, batch["bead_type"], centers, edge_center[same], edge_neighbor[same])
    vectors = torch.zeros(pos.shape[0], vectors_c.shape[1], 3, dtype=vectors_c.dtype)
    vectors[centers] = vectors_c
    atoms = model.reconstruct(pos, batch["bead_type"], vectors, batch["slot_atom"], int(batch["n_atoms"]))
    return atoms, dihedrals, centers


def compute_loss(model: HEroBM, batch: dict, weights: LossWeights, noise: float = 0.0, generator=None):
    atoms, dihedrals, centers = forward_batch(model, batch, noise, generator)
    return backmapping_loss(atoms, batch["atom_pos"], batch["atom_loss"], batch["bonds"], batch["angles"],
                            dihedrals, batch["bb_dihedral"][centers], batch["bb_dihedral_mask"][centers], weights), atoms


@torch.no_grad()
def validate(model: HEroBM, dataset: ProteinDataset, chains: list[int]) -> dict[str, float]:
    """Per-chain RMSD (heavy, backbone) over complete residues, averaged over ``chains``."""
    model.eval()
    heavy, backbone = [], []
    for i in chains:
        batch = dataset.full_chain_batch(i)
        atoms, _, _ = forward_batch(model, batch)
        mask = batch["atom_loss"]
        sq = (atoms - batch["atom_pos"]).pow(2).sum(-1)
        heavy.append(math.sqrt(sq[mask].mean().item()))
        bb = mask & batch["atom_is_backbone"]
        backbone.append(math.sqrt(sq[bb].mean().item()))
    model.train()
    return {"val_rmsd_heavy": float(np.mean(heavy)), "val_rmsd_backbone": float(np.mean(backbone))}


def train(config: TrainConfig, resume: bool = False, progress: bool = True, stop_at: int | None = None) -> Path:
    """Run (or resume) training; returns the path of the best checkpoint.

    ``stop_at``: end this session at that step (resumable, like ``max_hours``), keeping the
    schedule of the full ``config.steps``.
    """
    from tqdm import tqdm

    torch.set_num_threads(config.threads)
    out = Path(config.output)
    out.mkdir(parents=True, exist_ok=True)
    mapping_set = MappingSet.load(config.mapping)
    train_set, val_set = ProteinDataset(config.train), ProteinDataset(config.val)
    train_set.check_mapping(mapping_set)
    val_set.check_mapping(mapping_set)

    torch.manual_seed(config.seed)
    model = build_model(mapping_set, config.model)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    gamma = (config.lr_final / config.lr) ** (1.0 / max(config.steps, 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)
    rng = np.random.default_rng(config.seed)
    noise_gen = torch.Generator().manual_seed(config.seed)
    step, best, elapsed = 0, float("inf"), 0.0
    val_chains = list(np.random.default_rng(12345).permutation(val_set.n_chains)[: config.val_chains])

    if config.init and not resume:
        try:
            model.load_state_dict(torch.load(config.init, weights_only=True)["model"])
        except (OSError, RuntimeError, KeyError) as exc:
            raise HeroBMError(f"{config.init}: cannot initialise from this checkpoint ({exc})") from None
    last = out / "last.pt"
    if resume:
        if not last.exists():
            raise HeroBMError(f"{last}: no checkpoint to resume from; start without --resume")
        state = torch.load(last, weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, best, elapsed = state["step"], state["best"], state["elapsed"]
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        noise_gen.set_state(state["torch_rng"])
    (out / "config.yaml").write_text(yaml.safe_dump(_as_plain(config), sort_keys=False))

    log_path = out / "log.csv"
    log_fields = ["step", "epoch", "lr", "loss", "position", "bond", "angle", "dihedral",
                  "val_rmsd_heavy", "val_rmsd_backbone", "elapsed_s"]
    if not log_path.exists() or not resume:
        with open(log_path, "w", newline="") as f:
            csv.writer(f).writerow(log_fields)

    started = time.time() - elapsed
    running: dict[str, list[float]] = {}
    bar = tqdm(total=config.steps, initial=step, disable=not progress, desc="train", unit="step")
    while step < config.steps:
        batch = collate([train_set.sample_patch(rng, config.patch_radius, config.model.cutoff)
                         for _ in range(config.patches_per_step)])
        terms, _ = compute_loss(model, batch, config.loss, config.bead_noise, noise_gen)
        optimizer.zero_grad()
        terms["loss"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        optimizer.step()
        scheduler.step()
        step += 1
        for k, v in terms.items():
            running.setdefault(k, []).append(float(v.detach()))
        bar.update(1)
        bar.set_postfix(loss=f"{terms['loss'].item():.3f}", pos=f"{terms['position'].item():.3f}")
        out_of_time = (config.max_hours > 0 and (time.time() - started) > config.max_hours * 3600) or step == stop_at
        if step % config.epoch_steps == 0 or step == config.steps or out_of_time:
            metrics = validate(model, val_set, val_chains)
            row = {"step": step, "epoch": step // config.epoch_steps, "lr": scheduler.get_last_lr()[0],
                   **{k: float(np.mean(v)) for k, v in running.items()}, **metrics,
                   "elapsed_s": time.time() - started}
            running = {}
            with open(log_path, "a", newline="") as f:
                csv.writer(f).writerow([row.get(k, "") for k in log_fields])
            bar.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            score = metrics["val_rmsd_heavy"]
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "step": step, "best": min(best, score),
                     "elapsed": time.time() - started, "numpy_rng": json.dumps(rng.bit_generator.state),
                     "torch_rng": noise_gen.get_state(), "config": json.dumps(_as_plain(config)),
                     "metrics": json.dumps(metrics), "mapping_hash": mapping_set.files_hash}
            _atomic_save(state, last)
            if score < best:
                best = score
                _atomic_save(state, out / "best.pt")
            if out_of_time:
                bar.write(f"stopping at step {step}; continue with --resume")
                break
    bar.close()
    return out / "best.pt"


def _as_plain(config: TrainConfig) -> dict:
    return asdict(config)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)

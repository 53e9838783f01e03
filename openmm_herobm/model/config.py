"""The network's size options and the HEroBM module they build for a mapping set.

Training builds a model to train, ``herobm deploy`` rebuilds it to load a checkpoint's
weights; both read the options from here (the model does not depend on training).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..mapping import MappingSet
from .herobm import HEroBM
from .network import HEroBMNetwork


@dataclass
class ModelConfig:
    cutoff: float = 8.0
    channels: int = 16
    embed_dim: int = 32
    edge_dim: int = 64
    n_radial: int = 8
    hidden_mul: int = 16


def build_model(mapping_set: MappingSet, config: ModelConfig) -> HEroBM:
    network = HEroBMNetwork(mapping_set.n_bead_types, mapping_set.max_slots, cutoff=config.cutoff,
                            channels=config.channels, embed_dim=config.embed_dim, edge_dim=config.edge_dim,
                            n_radial=config.n_radial, hidden_mul=config.hidden_mul)
    anchor, level, weight = mapping_set.slot_tables()
    return HEroBM(network, torch.as_tensor(anchor), torch.as_tensor(level), torch.as_tensor(weight))

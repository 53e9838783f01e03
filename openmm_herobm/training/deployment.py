"""``herobm deploy``: a training checkpoint -> one TorchScript model file with its metadata.

The file format (and :func:`~openmm_herobm.model.deploy.load_model`, which reads it) is the
model's; turning a checkpoint into it needs the training config, so it lives here.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import torch

from ..errors import HeroBMError
from ..mapping import MappingSet
from ..model import METADATA, archive_kind, build_model, side_chain_extra_files
from ..reconstruction import SideChainLibrary
from ..resources import mappings_dir
from .trainer import TrainConfig

# what `herobm train` stores in a checkpoint and deploy reads back
_CHECKPOINT = {"config": str, "mapping_hash": str, "model": dict, "step": int, "elapsed": (int, float),
               "metrics": str}


def deploy(checkpoint: str | Path, output: str | Path, description: str = "",
           side_chains: str | Path | None = None) -> Path:
    """Script the model of a training checkpoint into one file with its metadata (and, given a
    ``side_chains`` library file from ``scripts/build_side_chain_library.py``, that library)."""
    from .. import __version__
    from ..io import atomic_output

    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise HeroBMError(f"{output}: output folder {folder} does not exist; create it first")
    state = _read_checkpoint(checkpoint)
    try:
        config = TrainConfig.from_dict(json.loads(state["config"]), f"{checkpoint}: training config")
        metrics = json.loads(state["metrics"])
    except (ValueError, TypeError) as exc:  # bad JSON, or options the model does not take
        raise HeroBMError(f"{checkpoint}: unreadable training config or metrics in the checkpoint ({exc})") from None
    mapping_set = MappingSet.load(config.mapping)
    if mapping_set.files_hash != state["mapping_hash"]:
        raise HeroBMError(f"{checkpoint}: trained with a different version of mapping set {config.mapping}")
    model = build_model(mapping_set, config.model)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:  # missing/unexpected/misshapen weights
        raise HeroBMError(f"{checkpoint}: weights do not fit the model its config describes "
                          f"({str(exc).splitlines()[0]})") from None
    model.eval()
    scripted = torch.jit.script(model)
    metadata = {
        "format": "openmm-herobm-model/1",
        "package_version": __version__,
        "mapping_set": mapping_set.name,
        "mapping_hash": mapping_set.files_hash,
        "bead_types": [[t.residue, t.bead] for t in mapping_set.bead_types],
        "molecules": sorted(m.cg_residue_name for m in mapping_set.molecules),
        "cutoff": config.model.cutoff,
        "max_slots": mapping_set.max_slots,
        "model": json.loads(state["config"])["model"],
        "training": {"train": config.train, "val": config.val, "steps": state["step"],
                     "hours": round(state["elapsed"] / 3600, 3), "bead_noise": config.bead_noise,
                     "description": description},
        "validation": metrics,
        "units": "Angstrom",
    }
    if not (mappings_dir() / mapping_set.name).is_dir():
        # a user's own set (a ligand...): the model file carries its YAML files, so it works anywhere
        folder = Path(config.mapping)
        metadata["mapping_files"] = {f.name: f.read_bytes().decode() for f in sorted(
            list(folder.glob("*.yaml")) + list(folder.glob("*.yml")))}
    extra = {METADATA: json.dumps(metadata, indent=1)}
    if side_chains is not None:
        extra = side_chain_extra_files(metadata, _read_library(side_chains))
    with atomic_output(output) as tmp:
        torch.jit.save(scripted, tmp, _extra_files=extra)
    return Path(output)


def _read_checkpoint(path: str | Path) -> dict:
    """The dict `herobm train` saved in ``path``, its keys checked; one clear error for any other file."""
    if archive_kind(path) == "model":  # torch.load would warn and name weights_only: say what it is
        raise HeroBMError(f"{path}: already a deployed model file, not a training checkpoint; deploy the "
                          "best.pt or last.pt that `herobm train` wrote")
    try:
        state = torch.load(path, weights_only=True)
    except OSError as exc:
        raise HeroBMError(f"{path}: cannot read checkpoint ({exc.strerror})") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError):  # not a torch.save file, or a damaged one
        raise HeroBMError(f"{path}: not a training checkpoint (not a PyTorch file, or a damaged one); deploy "
                          "the best.pt or last.pt that `herobm train` wrote") from None
    if not isinstance(state, dict):
        raise HeroBMError(f"{path}: not a training checkpoint (it holds a {type(state).__name__}); deploy the "
                          "best.pt or last.pt that `herobm train` wrote")
    bad = [key for key, kind in _CHECKPOINT.items() if not isinstance(state.get(key), kind)]
    if bad:
        raise HeroBMError(f"{path}: not a training checkpoint (missing or invalid {', '.join(bad)}); deploy the "
                          "best.pt or last.pt that `herobm train` wrote")
    return state


def _read_library(path: str | Path) -> SideChainLibrary:
    try:
        return SideChainLibrary.from_bytes(Path(path).read_bytes())
    except (OSError, ValueError, KeyError) as exc:
        raise HeroBMError(f"{path}: not a side-chain library ({exc}); build one with "
                          "scripts/build_side_chain_library.py") from None

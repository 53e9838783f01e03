"""One-file TorchScript models: ``herobm deploy`` writes them, :func:`load_model` reads them.

The file is ``torch.jit.save`` output with a ``metadata.json`` extra file: mapping set
name and hash of its YAML files, bead-type table, cutoff, slots per bead, training data
description, validation metrics and package version.  Loading checks the mapping set
against the hash, so a model is never run with a mapping it was not trained for.  A protein
model may also carry a side-chain library (``side_chains.npz``, see
:mod:`openmm_herobm.reconstruction.side_chain_library`), added by ``herobm deploy
--side-chains`` or :func:`attach_side_chains`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import HeroBMError
from ..mapping import MappingSet
from ..reconstruction.side_chain_library import EXTRA_FILE as SIDE_CHAINS
from ..reconstruction.side_chain_library import SideChainLibrary
from ..resources import mappings_dir, models_dir

METADATA = "metadata.json"


@dataclass
class LoadedModel:
    module: torch.jit.ScriptModule
    metadata: dict
    mapping_set: MappingSet
    path: Path
    side_chains: SideChainLibrary | None = None

    @property
    def cutoff(self) -> float:
        return float(self.metadata["cutoff"])


def deploy(checkpoint: str | Path, output: str | Path, description: str = "",
           side_chains: str | Path | None = None) -> Path:
    """Script the model of a training checkpoint into one file with its metadata (and, given a
    ``side_chains`` library file from ``scripts/build_side_chain_library.py``, that library)."""
    from .. import __version__
    from ..io import atomic_output
    from ..training.train import TrainConfig, build_model

    try:
        state = torch.load(checkpoint, weights_only=True)
    except (OSError, RuntimeError) as exc:
        raise HeroBMError(f"{checkpoint}: cannot read checkpoint ({exc})") from None
    config = TrainConfig.from_dict(json.loads(state["config"]))
    mapping_set = MappingSet.load(config.mapping)
    if mapping_set.files_hash != state["mapping_hash"]:
        raise HeroBMError(f"{checkpoint}: trained with a different version of mapping set {config.mapping}")
    model = build_model(mapping_set, config.model)
    model.load_state_dict(state["model"])
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
        "validation": json.loads(state["metrics"]),
        "units": "Angstrom",
    }
    if not (mappings_dir() / mapping_set.name).is_dir():
        # a user's own set (a ligand...): the model file carries its YAML files, so it works anywhere
        folder = Path(config.mapping)
        metadata["mapping_files"] = {f.name: f.read_bytes().decode() for f in sorted(
            list(folder.glob("*.yaml")) + list(folder.glob("*.yml")))}
    extra = {METADATA: json.dumps(metadata, indent=1)}
    if side_chains is not None:
        extra = _with_side_chains(metadata, _read_library(side_chains))
    with atomic_output(output) as tmp:
        torch.jit.save(scripted, tmp, _extra_files=extra)
    return Path(output)


def _read_library(path: str | Path) -> SideChainLibrary:
    try:
        return SideChainLibrary.from_bytes(Path(path).read_bytes())
    except (OSError, ValueError, KeyError) as exc:
        raise HeroBMError(f"{path}: not a side-chain library ({exc}); build one with "
                          "scripts/build_side_chain_library.py") from None


def _with_side_chains(metadata: dict, library: SideChainLibrary) -> dict:
    """Extra files of a model file that carries ``library`` (its metadata records the library)."""
    if library.info.get("mapping_hash", metadata["mapping_hash"]) != metadata["mapping_hash"]:
        raise HeroBMError(f"side-chain library was built with mapping set {library.info.get('mapping_set')} "
                          f"(hash {library.info['mapping_hash'][:12]}), the model with {metadata['mapping_set']} "
                          f"(hash {metadata['mapping_hash'][:12]}); rebuild the library with the model's mapping")
    metadata = dict(metadata, side_chains=dict(
        library.info, entries=len(library), neighbours=library.neighbours,
        weights={n: r.weight for n, r in library.residues.items()}))
    return {METADATA: json.dumps(metadata, indent=1), SIDE_CHAINS: library.to_bytes()}


def attach_side_chains(model: str | Path, library: SideChainLibrary, output: str | Path | None = None) -> Path:
    """Write ``model`` (a deployed file) again with ``library`` inside, to ``output`` (default: in place)."""
    from ..io import atomic_output

    loaded = load_model(model)
    output = Path(output or loaded.path)
    extra = _with_side_chains(loaded.metadata, library)
    with atomic_output(output) as tmp:
        torch.jit.save(loaded.module, tmp, _extra_files=extra)
    return output


def resolve_model_path(name_or_path: str | Path) -> Path:
    path = Path(name_or_path)
    if path.is_file():
        return path
    shipped = models_dir() / (str(name_or_path) if str(name_or_path).endswith(".pt") else f"{name_or_path}.pt")
    if shipped.is_file():
        return shipped
    names = ", ".join(sorted(p.stem for p in models_dir().glob("*.pt"))) or "none"
    raise HeroBMError(f"model {name_or_path!r} is neither a file nor a shipped model (shipped: {names})")


def load_model(name_or_path: str | Path, mapping: str | Path | MappingSet | None = None) -> LoadedModel:
    """Load a deployed model; ``mapping`` defaults to the set it was trained with.

    Raises :class:`HeroBMError` if the mapping set's files differ from those the model
    was trained on (a mapping/model mismatch would silently misplace atoms).
    """
    path = resolve_model_path(name_or_path)
    extra = {METADATA: "", SIDE_CHAINS: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError) as exc:
        raise HeroBMError(f"{path}: not a deployed HEroBM model ({str(exc).splitlines()[0]})") from None
    if not extra[METADATA]:
        raise HeroBMError(f"{path}: model file has no metadata; re-create it with `herobm deploy`")
    metadata = json.loads(extra[METADATA])
    if isinstance(mapping, MappingSet):
        mapping_set = mapping
    elif mapping is None and "mapping_files" in metadata:
        mapping_set = _embedded_mapping_set(metadata)
    else:
        mapping_set = MappingSet.load(mapping or metadata["mapping_set"])
    if mapping_set.files_hash != metadata["mapping_hash"]:
        raise HeroBMError(
            f"{path}: model was trained with mapping set {metadata['mapping_set']} "
            f"(hash {metadata['mapping_hash'][:12]}), but mapping set {mapping_set.name} "
            f"(hash {mapping_set.files_hash[:12]}) was given; use the matching mapping set or retrain"
        )
    module.eval()
    side_chains = None
    if extra[SIDE_CHAINS]:
        try:
            side_chains = SideChainLibrary.from_bytes(extra[SIDE_CHAINS])
        except (ValueError, KeyError) as exc:
            raise HeroBMError(f"{path}: unreadable side-chain library ({exc}); re-create the model file") from None
    return LoadedModel(module, metadata, mapping_set, path, side_chains)


def _embedded_mapping_set(metadata: dict) -> MappingSet:
    """The mapping set stored in a model file, unpacked once per content hash into a folder named
    like the original (loading the model again reuses it)."""
    import shutil
    import tempfile

    folder = (Path(tempfile.gettempdir()) / f"herobm_mapping_{metadata['mapping_hash'][:16]}"
              / metadata["mapping_set"])
    if not folder.is_dir():  # unpacked beside it, then moved: never a half-written folder
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=folder.parent))
        for name, text in metadata["mapping_files"].items():
            (staging / Path(name).name).write_bytes(text.encode())
        try:
            staging.rename(folder)
        except OSError:  # another process got there first
            shutil.rmtree(staging, ignore_errors=True)
    return MappingSet.load(folder)


def shipped_models() -> list[Path]:
    return sorted(models_dir().glob("*.pt"))

"""One-file TorchScript models: :func:`load_model` reads them (``herobm deploy``, in
:mod:`openmm_herobm.training.deployment`, writes them from a training checkpoint).

The file is ``torch.jit.save`` output with a ``metadata.json`` extra file: mapping set
name and hash of its YAML files, bead-type table, cutoff, slots per bead, training data
description, validation metrics and package version.  Loading checks the metadata, then the
mapping set against the hash, so a model is never run with a mapping it was not trained for.
A model trained on a user's own mapping set carries its YAML files; loading unpacks them
only into this user's cache (:func:`openmm_herobm.resources.cache_dir`), after checking
their names and hash in memory.  A protein model may also carry a side-chain library
(``side_chains.npz``, see :mod:`openmm_herobm.reconstruction.side_chain_library`), added by
``herobm deploy --side-chains`` or :func:`attach_side_chains`; a lipid model the regression of
its lipids' atoms in local bead frames (``lipid_frames.npz``, see
:mod:`openmm_herobm.reconstruction.lipid_frames`), added by :func:`attach_lipid_frames`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import HeroBMError
from ..mapping import MappingSet
from ..reconstruction import EXTRA_FILE as SIDE_CHAINS
from ..reconstruction import LIPID_FRAMES, LipidFrames, SideChainLibrary
from ..resources import cache_dir, models_dir

METADATA = "metadata.json"
# what loading and backmapping read from the metadata (the rest is a record for people)
_REQUIRED = {"mapping_set": str, "mapping_hash": str, "cutoff": (int, float), "molecules": list}
_HASH = re.compile(r"[0-9a-f]{64}")
_RECREATE = "re-create the model file with `herobm deploy`"


@dataclass
class LoadedModel:
    module: torch.jit.ScriptModule
    metadata: dict
    mapping_set: MappingSet
    path: Path
    side_chains: SideChainLibrary | None = None
    lipid_frames: LipidFrames | None = None

    @property
    def cutoff(self) -> float:
        return float(self.metadata["cutoff"])


def archive_kind(path: str | Path) -> str | None:
    """``"model"`` for a TorchScript archive (``torch.jit.save``), ``"checkpoint"`` for a
    ``torch.save`` one, None for anything else; reads only the zip directory."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile):
        return None
    if any(n.endswith("/constants.pkl") for n in names):  # only TorchScript writes one
        return "model"
    return "checkpoint" if any(n.endswith("/data.pkl") for n in names) else None


def side_chain_extra_files(metadata: dict, library: SideChainLibrary) -> dict:
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
    """Write ``model`` (a deployed file) again with ``library`` inside (its lipid frames, if any,
    kept), to ``output`` (default: in place)."""
    loaded = load_model(model)
    return _rewrite(loaded, output, loaded.metadata, library, loaded.lipid_frames)


def attach_lipid_frames(model: str | Path, frames: LipidFrames, output: str | Path | None = None) -> Path:
    """Write ``model`` (a deployed file) again with the lipid frame regression ``frames`` inside (its
    side-chain library, if any, kept), to ``output`` (default: in place)."""
    loaded = load_model(model)
    if frames.info.get("mapping_hash", loaded.metadata["mapping_hash"]) != loaded.metadata["mapping_hash"]:
        raise HeroBMError(f"lipid frames were fitted with mapping set {frames.info.get('mapping_set')}, the model "
                          f"uses {loaded.metadata['mapping_set']} (another hash); refit them with the model's mapping")
    unknown = sorted(n for n, m in frames.molecules.items()
                     if getattr(loaded.mapping_set.for_residue(n), "beads", None) != list(m.bead_names))
    if unknown:
        raise HeroBMError(f"lipid frames know {', '.join(unknown)}, which the model's mapping set has not (or "
                          "with other beads); refit them with the model's mapping")
    metadata = dict(loaded.metadata, lipid_frames=dict(frames.info, molecules=sorted(frames.molecules)))
    return _rewrite(loaded, output, metadata, loaded.side_chains, frames)


def _rewrite(loaded: LoadedModel, output, metadata: dict, side_chains: SideChainLibrary | None,
             lipid_frames: LipidFrames | None) -> Path:
    """``loaded``'s network saved to ``output`` (default: its own file, atomically) with these libraries."""
    from ..io import atomic_output

    extra = (side_chain_extra_files(metadata, side_chains) if side_chains is not None
             else {METADATA: json.dumps(metadata, indent=1)})
    if lipid_frames is not None:
        extra[LIPID_FRAMES] = lipid_frames.to_bytes()
    output = Path(output or loaded.path)
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


def model_metadata(name_or_path: str | Path) -> tuple[Path, dict]:
    """``(path, metadata)`` of a deployed model, read from its archive alone: no TorchScript, no
    mapping set (what choosing a model by the molecules it knows needs; loading both took 0.5 s
    per model).  A file whose metadata cannot be read is loaded, for :func:`load_model`'s error."""
    path = resolve_model_path(name_or_path)
    text = None
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist() if n.endswith(f"/extra/{METADATA}")), None)
            text = archive.read(name) if name else None
    except (OSError, zipfile.BadZipFile):
        pass
    if not text:
        return path, load_model(path).metadata
    return path, _read_metadata(path, text)


def load_model(name_or_path: str | Path, mapping: str | Path | MappingSet | None = None) -> LoadedModel:
    """Load a deployed model; ``mapping`` defaults to the set it was trained with.

    Raises :class:`HeroBMError` for a file that is not a model or has incomplete metadata, and
    if the mapping set's files differ from those the model was trained on (a mapping/model
    mismatch would silently misplace atoms).
    """
    path = resolve_model_path(name_or_path)
    extra = {METADATA: "", SIDE_CHAINS: "", LIPID_FRAMES: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except (RuntimeError, ValueError) as exc:
        if archive_kind(path) == "checkpoint":
            raise HeroBMError(f"{path}: a training checkpoint, not a model file; turn it into one with "
                              "`herobm deploy`") from None
        raise HeroBMError(f"{path}: not a deployed HEroBM model ({str(exc).splitlines()[0]})") from None
    metadata = _read_metadata(path, extra[METADATA])
    if isinstance(mapping, MappingSet):
        mapping_set = mapping
    elif mapping is None and "mapping_files" in metadata:
        mapping_set = _embedded_mapping_set(path, metadata)
    else:
        mapping_set = MappingSet.load(mapping or metadata["mapping_set"])
    if mapping_set.files_hash != metadata["mapping_hash"]:
        raise HeroBMError(
            f"{path}: model was trained with mapping set {metadata['mapping_set']} "
            f"(hash {metadata['mapping_hash'][:12]}), but mapping set {mapping_set.name} "
            f"(hash {mapping_set.files_hash[:12]}) was given; use the matching mapping set or retrain"
        )
    module.eval()
    side_chains = _library(path, extra[SIDE_CHAINS], SideChainLibrary, "side-chain library")
    lipid_frames = _library(path, extra[LIPID_FRAMES], LipidFrames, "lipid frames")
    return LoadedModel(module, metadata, mapping_set, path, side_chains, lipid_frames)


def _library(path: Path, data: str | bytes, kind, what: str):
    """A library the model file carries (None when it carries none), or one clear error."""
    if not data:
        return None
    try:
        return kind.from_bytes(data)
    except (ValueError, KeyError) as exc:
        raise HeroBMError(f"{path}: unreadable {what} ({exc}); re-create the model file") from None


def _plain_name(name: str) -> bool:
    """A name that stays inside the folder it is joined to: one path component, not '.' or '..'."""
    return name not in ("", ".", "..") and not any(c in name for c in "/\\\0")


def _read_metadata(path: Path, text: str | bytes) -> dict:
    """The model file's metadata, with the keys loading relies on checked (one clear error, never a
    KeyError or a path taken from the file)."""
    if not text:
        raise HeroBMError(f"{path}: model file has no metadata; {_RECREATE}")
    try:
        metadata = json.loads(text)
    except ValueError as exc:  # bad JSON or bad UTF-8
        raise HeroBMError(f"{path}: model metadata is not valid JSON ({exc}); {_RECREATE}") from None
    if not isinstance(metadata, dict):
        raise HeroBMError(f"{path}: model metadata is a JSON {type(metadata).__name__}, not an object; {_RECREATE}")
    missing = [key for key in _REQUIRED if key not in metadata]
    if missing:
        raise HeroBMError(f"{path}: model metadata lacks {', '.join(missing)}; {_RECREATE}")
    wrong = [key for key, kind in _REQUIRED.items()
             if not isinstance(metadata[key], kind) or isinstance(metadata[key], bool)]
    if not wrong:
        wrong = [key for key, ok in (
            ("mapping_set", _plain_name(metadata["mapping_set"])),
            ("mapping_hash", _HASH.fullmatch(metadata["mapping_hash"]) is not None),
            ("cutoff", math.isfinite(metadata["cutoff"]) and metadata["cutoff"] > 0),
            ("molecules", all(isinstance(m, str) for m in metadata["molecules"])),
            ("mapping_files", isinstance(metadata.get("mapping_files", {}), dict)
             and all(isinstance(t, str) for t in metadata.get("mapping_files", {}).values())),
        ) if not ok]
    if wrong:
        raise HeroBMError(f"{path}: model metadata has an invalid {', '.join(wrong)} (expected: mapping_set a "
                          "folder name, mapping_hash 64 hex digits, cutoff > 0, molecules and mapping_files "
                          f"text); {_RECREATE}")
    return metadata


def _embedded_mapping_set(path: Path, metadata: dict) -> MappingSet:
    """The mapping set a model file carries, in ``cache_dir()/mappings/<hash>/<set name>``.

    Nothing is written unless every file name is a plain ``.yaml``/``.yml`` name and the files
    in memory hash to the model's mapping hash; the folder is filled beside its place and renamed
    into it, so it is never half-written, and loading the model again reuses it."""
    name, files = metadata["mapping_set"], metadata["mapping_files"]
    bad = [n for n in files if not (_plain_name(n) and n.endswith((".yaml", ".yml")))]
    if bad:
        raise HeroBMError(f"{path}: carried mapping file name {bad[0]!r} is not a plain .yaml file name; "
                          f"the model file is damaged or was altered, {_RECREATE}")
    digest = hashlib.sha256()  # as MappingSet.load: name and bytes of each file, in name order
    for n in sorted(files):
        digest.update(n.encode())
        digest.update(files[n].encode())
    if digest.hexdigest() != metadata["mapping_hash"]:
        raise HeroBMError(f"{path}: the mapping files it carries do not match its mapping hash; the model "
                          f"file is damaged or was altered, {_RECREATE}")
    root = cache_dir() / "mappings" / metadata["mapping_hash"]
    folder = root / name
    if not folder.is_dir():
        try:
            root.mkdir(parents=True, exist_ok=True, mode=0o700)
            staging = Path(tempfile.mkdtemp(dir=root, prefix=".unpack-"))
        except OSError as exc:
            raise HeroBMError(f"{path}: cannot unpack its mapping set into {root} ({exc.strerror}); "
                              "set XDG_CACHE_HOME to a writable folder") from None
        try:
            for n, text in files.items():
                (staging / n).write_bytes(text.encode())
            staging.rename(folder)
        except OSError:  # another process got there first (or the disk is full: checked below)
            shutil.rmtree(staging, ignore_errors=True)
        if not folder.is_dir():
            raise HeroBMError(f"{path}: cannot unpack its mapping set into {folder}; "
                              "set XDG_CACHE_HOME to a writable folder")
    mapping_set = MappingSet.load(folder)
    if mapping_set.files_hash != metadata["mapping_hash"]:
        raise HeroBMError(f"{folder}: this cached copy of mapping set {name} was changed; delete the folder "
                          f"and load {path} again")
    return mapping_set


def shipped_models() -> list[Path]:
    return sorted(models_dir().glob("*.pt"))

"""The HEroBM model: equivariant network + hierarchical reconstruction, deployable as TorchScript.

Nothing here imports :mod:`openmm_herobm.training`: training builds on the model, not the
other way round (``herobm deploy``, checkpoint -> model file, lives in training).  Import
from here; torch (and e3nn, with torch._dynamo, ~1.2 s) is loaded on first use: backmapping
runs the deployed TorchScript file and never builds the e3nn network.
"""

#: module -> the public names it defines, imported on first use
_MODULES = {"network": ("HEroBMNetwork",),
            "config": ("ModelConfig", "build_model"),
            "herobm": ("HEroBM", "radius_edges"),
            "deploy": ("LoadedModel", "METADATA", "archive_kind", "attach_side_chains", "load_model",
                       "shipped_models", "side_chain_extra_files"),
            "inference": ("predict_chunked",)}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [*_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))

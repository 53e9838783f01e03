"""Training HEroBM models: datasets built from all-atom chains, patches, batches, training, ``deploy``.

Import from here; torch and mdtraj are loaded on first use (``herobm --help`` builds the
dataset parser without them).  The modules are named for their job (``trainer``,
``deployment``), not for the functions they define, so ``openmm_herobm.training.train`` is
always the function, whatever was imported before.
"""

#: module -> the public names it defines, imported on first use
_MODULES = {"dataset": ("DatasetReport", "ProteinDataset", "build_dataset", "collate", "process_structure"),
            "trainer": ("TrainConfig", "train"),
            "deployment": ("deploy",),
            "cli": ("add_dataset_parser",)}
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

"""Training data for HEroBM models: datasets built from all-atom chains, patches, batches."""

__all__ = ["DatasetReport", "ProteinDataset", "build_dataset", "collate", "process_structure"]


def __getattr__(name):
    # imported on first use: `herobm --help` builds the dataset parser without loading mdtraj
    if name in __all__:
        from . import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Training data for HEroBM models: datasets built from all-atom chains, patches, batches."""

from .dataset import DatasetReport, ProteinDataset, build_dataset, collate, process_structure

__all__ = ["DatasetReport", "ProteinDataset", "build_dataset", "collate", "process_structure"]

"""Training HEroBM models: datasets built from all-atom chains, patches, batches, training, ``deploy``.

Import from here; torch and mdtraj are loaded on first use (``herobm --help`` builds the
dataset parser without them).  The modules are named for their job (``trainer``,
``deployment``), not for the functions they define, so ``openmm_herobm.training.train`` is
always the function, whatever was imported before.
"""

from ..faces import lazy_face

#: module -> the public names it defines, imported on first use
_MODULES = {"dataset": ("DatasetReport", "ProteinDataset", "build_dataset", "collate", "process_structure"),
            "trainer": ("TrainConfig", "train"),
            "deployment": ("deploy",),
            "lipid_frames": ("build_lipid_frames", "evaluate_lipid_frames"),
            "cli": ("add_dataset_parser",)}
__getattr__, __dir__, _names = lazy_face(__name__, _MODULES)
__all__ = _names

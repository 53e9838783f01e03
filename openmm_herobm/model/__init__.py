"""The HEroBM model: equivariant network + hierarchical reconstruction, deployable as TorchScript.

Nothing here imports :mod:`openmm_herobm.training`: training builds on the model, not the
other way round (``herobm deploy``, checkpoint -> model file, lives in training).  Import
from here; torch (and e3nn, with torch._dynamo, ~1.2 s) is loaded on first use: backmapping
runs the deployed TorchScript file and never builds the e3nn network.
"""

from ..faces import lazy_face

#: module -> the public names it defines, imported on first use
_MODULES = {"network": ("HEroBMNetwork",),
            "config": ("ModelConfig", "build_model"),
            "herobm": ("HEroBM", "radius_edges"),
            "deploy": ("LoadedModel", "METADATA", "archive_kind", "attach_lipid_frames", "attach_side_chains", "load_model",
                       "model_metadata", "shipped_models", "side_chain_extra_files"),
            "inference": ("plain_execution", "predict_chunked")}
__getattr__, __dir__, _names = lazy_face(__name__, _MODULES)
__all__ = _names

"""The HEroBM model: equivariant network + hierarchical reconstruction, deployable as TorchScript.

Nothing here imports :mod:`openmm_herobm.training`: training builds on the model, not the
other way round (``herobm deploy``, checkpoint -> model file, lives in training).
"""

__all__ = ["HEroBMNetwork", "ModelConfig", "build_model"]


def __getattr__(name):
    # e3nn (and with it torch._dynamo, ~1.2 s) is loaded only to build or train a network:
    # backmapping runs the deployed TorchScript file
    if name == "HEroBMNetwork":
        from .network import HEroBMNetwork

        return HEroBMNetwork
    if name in ("ModelConfig", "build_model"):
        from . import config

        return getattr(config, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The HEroBM model: equivariant network + hierarchical reconstruction, deployable as TorchScript."""

from .network import HEroBMNetwork

__all__ = ["HEroBMNetwork"]

"""The HEroBM model: equivariant network + hierarchical reconstruction, deployable as TorchScript."""

__all__ = ["HEroBMNetwork"]


def __getattr__(name):
    # e3nn (and with it torch._dynamo, ~1.2 s) is loaded only to build or train a network:
    # backmapping runs the deployed TorchScript file
    if name == "HEroBMNetwork":
        from .network import HEroBMNetwork

        return HEroBMNetwork
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

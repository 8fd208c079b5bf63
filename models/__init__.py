"""Networks from specs: blocks, the builder, the zoo of published models, and profiling."""

from .blocks import FusedMBConv, MBConv, SqueezeExcite, StochasticDepth
from .network import EfficientNet, build_model
from .zoo import get_spec, zoo_names

__all__ = ["EfficientNet", "FusedMBConv", "MBConv", "SqueezeExcite", "StochasticDepth", "build_model",
           "get_spec", "zoo_names"]

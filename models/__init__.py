"""Networks from specs: blocks, the builder, and counting (params, multiply-adds)."""

from effnas.models.blocks import FusedMBConv, MBConv, SqueezeExcite, StochasticDepth
from effnas.models.network import EfficientNet, build_model
from effnas.models.profile import ProfileError, count_macs, count_macs_by_module, count_params, count_spec

__all__ = ["EfficientNet", "FusedMBConv", "MBConv", "ProfileError", "SqueezeExcite", "StochasticDepth",
           "build_model", "count_macs", "count_macs_by_module", "count_params", "count_spec"]

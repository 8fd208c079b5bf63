"""Networks from specs: blocks, the builder, and profiling."""

from effnas.models.blocks import FusedMBConv, MBConv, SqueezeExcite, StochasticDepth
from effnas.models.network import EfficientNet, build_model
from effnas.models.profile import (ProfileError, count_macs, count_macs_by_module, count_params, profile_spec, resolve_device,
                      time_train_step)

__all__ = ["EfficientNet", "FusedMBConv", "MBConv", "ProfileError", "SqueezeExcite", "StochasticDepth",
           "build_model", "count_macs", "count_macs_by_module", "count_params", "profile_spec",
           "resolve_device", "time_train_step"]

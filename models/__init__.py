"""Networks from specs: blocks, the builder, the zoo of published models, and profiling."""

from .blocks import FusedMBConv, MBConv, SqueezeExcite, StochasticDepth
from .network import EfficientNet, build_model
from .profile import (ProfileError, count_macs, count_macs_by_module, count_params, profile_spec, resolve_device,
                      time_train_step)
from .zoo import get_spec, zoo_names

__all__ = ["EfficientNet", "FusedMBConv", "MBConv", "ProfileError", "SqueezeExcite", "StochasticDepth",
           "build_model", "count_macs", "count_macs_by_module", "count_params", "get_spec", "profile_spec",
           "resolve_device", "time_train_step", "zoo_names"]

"""Scaling a searched base spec into a family of bigger models (EfficientNetV2's rule or compound)."""

from .compound import ALPHA, BETA, EFFICIENTNET_V1_COEFFICIENTS, GAMMA, efficientnet_v1, scale_uniform
from .rules import DEFAULT_MAX_IMAGE_SIZE, MAX_PHI, RULES, TARGETS, ScaleError, resolve_phi, scale_spec

__all__ = ["ALPHA", "BETA", "DEFAULT_MAX_IMAGE_SIZE", "EFFICIENTNET_V1_COEFFICIENTS", "GAMMA", "MAX_PHI", "RULES",
           "TARGETS", "ScaleError", "efficientnet_v1", "resolve_phi", "scale_spec", "scale_uniform"]

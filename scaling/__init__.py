"""Scaling a searched base spec into a family of bigger models."""

from .compound import ALPHA, BETA, EFFICIENTNET_V1_COEFFICIENTS, GAMMA, efficientnet_v1, scale_uniform

__all__ = ["ALPHA", "BETA", "EFFICIENTNET_V1_COEFFICIENTS", "GAMMA", "efficientnet_v1", "scale_uniform"]

"""Scaling a searched base spec into a family of bigger models (EfficientNetV2's non-uniform rule, or compound)."""

from effnas.scaling.rules import DEFAULT_MAX_IMAGE_SIZE, MAX_PHI, RULES, TARGETS, ScaleError, resolve_phi, scale_spec

__all__ = ["DEFAULT_MAX_IMAGE_SIZE", "MAX_PHI", "RULES", "TARGETS", "ScaleError", "resolve_phi", "scale_spec"]

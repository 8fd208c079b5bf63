"""Architecture specs, the official block-string notation, rounding rules and the search space."""

from .block_strings import decode_block_string, encode_block_string
from .errors import EffnasError, SpecError
from .rounding import round_filters, round_repeats
from .spec import OPS, ArchSpec, ProgressiveRecipe, StageSpec, load_spec, save_spec, spec_from_dict
from .space import SearchSpace, SpaceError, StageChoices, default_space, load_space

__all__ = [
    "OPS", "ArchSpec", "EffnasError", "ProgressiveRecipe", "SpecError", "StageSpec",
    "decode_block_string", "encode_block_string", "load_spec", "round_filters", "round_repeats",
    "save_spec", "spec_from_dict",
    "SearchSpace", "SpaceError", "StageChoices", "default_space", "load_space",
]

"""The spec layer: architecture specs, the official block strings, rounding, the published models as specs,
uniform scaling and the search space. Plain data and rules: nothing here needs torch."""

from effnas.errors import SpecError
from effnas.search_space.block_strings import decode_block_string, encode_block_string
from effnas.search_space.compound import EFFICIENTNET_V1_COEFFICIENTS, efficientnet_v1, scale_uniform
from effnas.search_space.loading import load_arch, load_spec, save_spec, spec_from_dict, spec_from_json
from effnas.search_space.published import get_spec, zoo_names
from effnas.search_space.rounding import round_filters, round_repeats
from effnas.search_space.space import SearchSpace, SpaceError, StageChoices, default_space, load_space
from effnas.search_space.spec import OPS, ArchSpec, ProgressiveRecipe, StageSpec

__all__ = [
    "EFFICIENTNET_V1_COEFFICIENTS", "OPS", "ArchSpec", "ProgressiveRecipe", "SearchSpace", "SpaceError", "SpecError",
    "StageChoices", "StageSpec", "decode_block_string", "default_space", "efficientnet_v1", "encode_block_string",
    "get_spec", "load_arch", "load_space", "load_spec", "round_filters", "round_repeats", "save_spec",
    "scale_uniform", "spec_from_dict", "spec_from_json", "zoo_names",
]

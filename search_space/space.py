"""The search space: per-stage choices around a fixed backbone, sampled through Optuna's trial API.

Following the paper (after MnasNet's factorized space), every stage of a backbone keeps its channels
and strides, and the search chooses the stage's op (MBConv or Fused-MBConv), kernel, expansion ratio,
layer count and, for MBConv stages, squeeze-excitation on/off. The backbone is scaled down for the
proxy (width, depth, image size), so the same space is cheap enough to search on a laptop.

Every stage always has all five parameters ``s{i}_op``, ``s{i}_kernel``, ``s{i}_expand``,
``s{i}_layers``, ``s{i}_se`` (0-based ``i``): relative samplers (multivariate TPE, NSGA-II, the RL and
evolution controllers) need a fixed set. ``s{i}_se`` is ignored where the op is fused (fused stages
never use SE), and :meth:`SearchSpace.size` counts distinct architectures, not parameter tuples.

A space file is JSON (or YAML, when PyYAML is installed); an empty file ``{}`` is the default space::

    {"backbone": "efficientnetv2-s", "width": 0.25, "depth": 0.5, "image_size": 32,
     "choices": {"op": ["mbconv", "fused"], "kernel": [3, 5], "expand": [1, 4, 6],
                 "layer_offsets": [-1, 0, 1], "se": [false, true]},
     "stages": {"0": {"op": ["fused"]}, "5": {"layers": [6, 8, 10]}}}

``backbone`` is a zoo name, an inline spec object, or a list of official block strings.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from effnas.errors import EffnasError, SpecError, shown
from effnas.search_space.block_strings import decode_block_string
from effnas.search_space.compound import scale_uniform
from effnas.search_space.loading import check_depth, parse_json, read_input, spec_from_dict
from effnas.search_space.published import get_spec
from effnas.search_space.rounding import round_filters
from effnas.search_space.spec import ACTIVATIONS, DEFAULT_ACTIVATION, MAX_IMAGE_SIZE, OPS, ArchSpec, StageSpec, check_name

if TYPE_CHECKING:
    import optuna

DECISIONS = ("op", "kernel", "expand", "layers", "se")
# Whole-network decisions, searched only where a space offers more than one value (``"network"`` in a space file):
# the width multiplier of every stage and the stem (the head keeps the space's width), and the activation.
NETWORK_DECISIONS = ("width", "activation")
DEFAULT_NETWORK_CHOICES: dict[str, tuple[Any, ...]] = {"width": (1.0,), "activation": (DEFAULT_ACTIVATION,)}
DEFAULT_CHOICES: dict[str, tuple[Any, ...]] = {
    "op": ("mbconv", "fused"), "kernel": (3, 5), "expand": (1, 4, 6), "layer_offsets": (-1, 0, 1),
    "se": (False, True),
}
DEFAULTS: dict[str, Any] = {"name": "default", "backbone": "efficientnetv2-s", "width": 0.25, "depth": 0.5,
                            "image_size": 32, "se_ratio": 0.25}
_TOP_FIELDS = ("name", "backbone", "width", "depth", "image_size", "stem_stride", "head_channels", "dropout",
               "drop_path_rate", "se_ratio", "choices", "stages", "network")
_CHOICE_FIELDS = ("op", "kernel", "expand", "layer_offsets", "se")
_STAGE_FIELDS = ("op", "kernel", "expand", "layers", "layer_offsets", "se")


class SpaceError(EffnasError, ValueError):
    """A search-space file (or dict) that does not describe a space."""


def param_name(stage: int, decision: str) -> str:
    """The Optuna parameter name of one decision, e.g. ``s3_kernel``."""
    return f"s{stage}_{decision}"


def network_param_name(decision: str) -> str:
    """The Optuna parameter name of a whole-network decision, e.g. ``net_width``."""
    return f"net_{decision}"


def _network_choices(data: Any) -> dict[str, tuple[Any, ...]]:
    """The ``"network"`` field: allowed widths (multipliers in (0, 4]) and activations, each a non-empty list."""
    _check_keys("network", data, NETWORK_DECISIONS)
    result = dict(DEFAULT_NETWORK_CHOICES)
    for decision, values in data.items():
        path = f"network.{decision}"
        if not isinstance(values, (list, tuple)) or len(values) == 0:
            raise SpaceError(f"{path}: must be a non-empty list, got {shown(values)}")
        if decision == "width":
            checked = tuple(_number(f"{path}[{i}]", value, 0.0, 4.0) for i, value in enumerate(values))
            if 1.0 not in checked:
                raise SpaceError(f"{path}: must include 1 (the backbone's own width, the search's first trial)")
        else:
            for i, value in enumerate(values):
                if value not in ACTIVATIONS:
                    raise SpaceError(f"{path}[{i}]: unknown activation {shown(value)} "
                                     f"(expected one of {', '.join(ACTIVATIONS)})")
            checked = tuple(values)
        if len(set(checked)) != len(checked):
            raise SpaceError(f"{path}: duplicate values in {shown(list(values))}")
        result[decision] = checked
    return result


@dataclass(frozen=True)
class StageChoices:
    """The allowed values of one stage's five decisions."""

    op: tuple[str, ...]
    kernel: tuple[int, ...]
    expand: tuple[int, ...]
    layers: tuple[int, ...]
    se: tuple[bool, ...]

    def size(self) -> int:
        """Distinct stages: SE only multiplies the MBConv variants (fused stages never use it)."""
        per_op = len(self.kernel) * len(self.expand) * len(self.layers)
        return sum(per_op * (len(self.se) if op == "mbconv" else 1) for op in self.op)

    def to_dict(self) -> dict[str, list[Any]]:
        return {name: list(getattr(self, name)) for name in DECISIONS}


# ---------------------------------------------------------------------- parsing helpers
def _number(path: str, value: Any, low: float, high: float, low_inclusive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpaceError(f"{path}: must be a number, got {shown(value)}")
    if not (low <= value if low_inclusive else low < value) or value > high:
        raise SpaceError(f"{path}: must be in {'[' if low_inclusive else '('}{low}, {high}], got {value}")
    return float(value)


def _integer(path: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpaceError(f"{path}: must be an integer, got {shown(value)}")
    if not low <= value <= high:
        raise SpaceError(f"{path}: must be in [{low}, {high}], got {value}")
    return value


def _choice_list(path: str, values: Any, decision: str) -> tuple[Any, ...]:
    """Validate one list of allowed values (non-empty, no duplicates, each value legal)."""
    if not isinstance(values, (list, tuple)) or len(values) == 0:
        raise SpaceError(f"{path}: must be a non-empty list, got {shown(values)}")
    checked: list[Any] = []
    for index, value in enumerate(values):
        where = f"{path}[{index}]"
        if decision == "op":
            if value not in OPS:
                raise SpaceError(f"{where}: unknown op {shown(value)} (expected one of {', '.join(OPS)})")
        elif decision == "se":
            if not isinstance(value, bool):
                raise SpaceError(f"{where}: must be true or false, got {shown(value)}")
        elif decision == "kernel":
            value = _integer(where, value, 1, 15)
            if value % 2 == 0:
                raise SpaceError(f"{where}: kernel must be odd, got {value}")
        elif decision == "expand":
            value = _integer(where, value, 1, 16)
        elif decision == "layers":
            value = _integer(where, value, 1, 100)
        else:  # layer_offsets
            value = _integer(where, value, -100, 100)
        if value in checked:
            raise SpaceError(f"{where}: duplicate value {shown(value)}")
        checked.append(value)
    return tuple(checked)


def _check_keys(path: str, data: Any, allowed: tuple[str, ...]) -> None:
    if not isinstance(data, Mapping):
        raise SpaceError(f"{path}: expected an object, got {type(data).__name__}")
    for key in data:
        if key not in allowed:
            raise SpaceError(f"{path}: unknown field {shown(key)} (allowed: {', '.join(allowed)})")


def _resolve_backbone(source: Any) -> ArchSpec:
    """A zoo name, an inline spec object or a list of block strings -> the full-size backbone."""
    try:
        if isinstance(source, str):
            return get_spec(source)
        if isinstance(source, Mapping):
            return spec_from_dict(dict(source))
        if isinstance(source, list) and source and all(isinstance(s, str) for s in source):
            stages = tuple(decode_block_string(s) for s in source)
            return ArchSpec(stages=stages, stem_channels=stages[0].in_channels, name="custom")
    except SpecError as error:
        raise SpaceError(f"backbone: {error}") from None
    raise SpaceError(f"backbone: expected a zoo name, a spec object or a list of block strings, got {shown(source)}")


# ---------------------------------------------------------------------- the space
@dataclass(frozen=True)
class SearchSpace:
    """Per-stage choices around ``backbone``, the width/depth/resolution-reduced proxy network.

    Build one with :func:`default_space`, :func:`load_space` or :meth:`from_dict`.
    """

    backbone: ArchSpec
    stages: tuple[StageChoices, ...]
    config: Mapping[str, Any]  # the normalised file contents (without per-stage choices)
    network: Mapping[str, tuple[Any, ...]] = dataclasses.field(default_factory=lambda: dict(DEFAULT_NETWORK_CHOICES))

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dict(cls, data: Any) -> "SearchSpace":
        """Parse and validate a space description; every problem is a one-line :class:`SpaceError`."""
        if data is None:
            data = {}
        _check_keys("space", data, _TOP_FIELDS)
        config = {**DEFAULTS, **{k: v for k, v in data.items() if k not in ("choices", "stages")}}
        if not isinstance(config["name"], str) or not config["name"]:
            raise SpaceError(f"name: must be a non-empty string, got {shown(config['name'])}")
        check_name("name", config["name"], SpaceError)
        width = _number("width", config["width"], 0.0, 8.0)
        depth = _number("depth", config["depth"], 0.0, 8.0)
        se_ratio = _number("se_ratio", config["se_ratio"], 0.0, 1.0)
        base = _resolve_backbone(config["backbone"])
        image_size = _integer("image_size", config["image_size"], base.total_stride, MAX_IMAGE_SIZE)

        changes: dict[str, Any] = {"train_image_size": image_size, "eval_image_size": image_size,
                                   "progressive": None, "name": f"{base.name or 'backbone'}-proxy"}
        if "stem_stride" in data:
            changes["stem_stride"] = _integer("stem_stride", data["stem_stride"], 1, 2)
        if "head_channels" in data:
            changes["head_channels"] = _integer("head_channels", data["head_channels"], 1, 8192)
        if "dropout" in data:
            changes["dropout"] = _number("dropout", data["dropout"], 0.0, 0.99, True)
        if "drop_path_rate" in data:
            changes["drop_path_rate"] = _number("drop_path_rate", data["drop_path_rate"], 0.0, 0.99, True)
        try:
            backbone = scale_uniform(base.replace(progressive=None), width, depth, rounding="v2").replace(**changes)
        except SpecError as error:
            raise SpaceError(f"backbone: the proxy is not a valid network: {error}") from None

        stages = cls._parse_stages(data.get("choices", {}), data.get("stages", {}), backbone)
        network = _network_choices(data.get("network", {}))
        if backbone.activation not in network["activation"]:  # the backbone, the search's first trial, is in the space
            backbone = backbone.replace(activation=network["activation"][0])
        config.pop("network", None)
        config.update(width=width, depth=depth, se_ratio=se_ratio, image_size=image_size,
                      head_channels=backbone.head_channels, dropout=backbone.dropout,
                      drop_path_rate=backbone.drop_path_rate)
        return cls(backbone=backbone, stages=stages, config=config, network=network)

    @staticmethod
    def _parse_stages(choices: Any, overrides: Any, backbone: ArchSpec) -> tuple[StageChoices, ...]:
        _check_keys("choices", choices, _CHOICE_FIELDS)
        common = {key: _choice_list(f"choices.{key}", choices[key], key) if key in choices else default
                  for key, default in DEFAULT_CHOICES.items()}
        count = len(backbone.stages)
        if isinstance(overrides, list):
            if len(overrides) != count:
                raise SpaceError(f"stages: the list needs one entry per backbone stage ({count}), got {len(overrides)}")
            overrides = {str(i): entry for i, entry in enumerate(overrides)}
        _check_keys("stages", overrides, tuple(str(i) for i in range(count)))
        result = []
        for index, stage in enumerate(backbone.stages):
            own = overrides.get(str(index)) or {}
            path = f"stages.{index}"
            _check_keys(path, own, _STAGE_FIELDS)
            values = {key: _choice_list(f"{path}.{key}", own[key], key) if key in own else common[key]
                      for key in ("op", "kernel", "expand", "se")}
            if "layers" in own and "layer_offsets" in own:
                raise SpaceError(f"{path}: give either layers or layer_offsets, not both")
            if "layers" in own:
                layers = _choice_list(f"{path}.layers", own["layers"], "layers")
            else:
                offsets = (_choice_list(f"{path}.layer_offsets", own["layer_offsets"], "layer_offsets")
                           if "layer_offsets" in own else common["layer_offsets"])
                layers = tuple(sorted({max(1, stage.layers + offset) for offset in offsets}))
                if max(layers) > 100:
                    raise SpaceError(f"{path}.layer_offsets: a stage may have at most 100 layers")
            result.append(StageChoices(layers=layers, **values))
        return tuple(result)

    def to_dict(self) -> dict[str, Any]:
        """A complete description (per-stage choices spelled out) that :meth:`from_dict` reads back."""
        described = {**self.config, "stages": [stage.to_dict() for stage in self.stages]}
        if self.network != DEFAULT_NETWORK_CHOICES:
            described["network"] = {name: list(values) for name, values in self.network.items()}
        return described

    # ------------------------------------------------------------------ the Optuna view
    @property
    def name(self) -> str:
        return str(self.config["name"])

    def param_names(self) -> list[str]:
        """Every parameter, stage by stage, then the whole-network ones the space searches, in a fixed order (the
        RL controller's decision order)."""
        return ([param_name(i, d) for i in range(len(self.stages)) for d in DECISIONS] +
                [network_param_name(d) for d in NETWORK_DECISIONS if len(self.network[d]) > 1])

    def choices(self, name: str) -> tuple[Any, ...]:
        if name.startswith("net_"):
            return self.network[name[4:]]
        stage, decision = name[1:].split("_", 1)
        return getattr(self.stages[int(stage)], decision)

    def distributions(self) -> dict[str, "optuna.distributions.CategoricalDistribution"]:
        from optuna.distributions import CategoricalDistribution  # the spec layer needs optuna only here

        return {name: CategoricalDistribution(self.choices(name)) for name in self.param_names()}

    def sample(self, trial: "optuna.Trial", num_classes: int | None = None) -> ArchSpec:
        """Ask the trial (hence its sampler) for every decision and return the candidate's spec."""
        params = {name: trial.suggest_categorical(name, self.choices(name)) for name in self.param_names()}
        return self.spec_from_params(params, num_classes=num_classes)

    def spec_from_params(self, params: Mapping[str, Any], num_classes: int | None = None) -> ArchSpec:
        """The candidate a set of parameters describes (extra keys are ignored)."""
        stages = []
        for index, (stage, allowed) in enumerate(zip(self.backbone.stages, self.stages)):
            chosen = {}
            for decision in DECISIONS:
                name = param_name(index, decision)
                if name not in params:
                    raise SpaceError(f"{name}: missing parameter")
                if params[name] not in getattr(allowed, decision):
                    raise SpaceError(f"{name}: {shown(params[name])} is not one of {list(getattr(allowed, decision))}")
                chosen[decision] = params[name]
            se = self.config["se_ratio"] if chosen["op"] == "mbconv" and chosen["se"] else 0.0
            stages.append(StageSpec(op=chosen["op"], kernel=chosen["kernel"], stride=stage.stride,
                                    expand_ratio=chosen["expand"], in_channels=stage.in_channels,
                                    out_channels=stage.out_channels, layers=chosen["layers"], se_ratio=se))
        chosen = {}
        for decision in NETWORK_DECISIONS:
            allowed, name = self.network[decision], network_param_name(decision)
            chosen[decision] = params.get(name, allowed[0]) if len(allowed) == 1 else params.get(name)
            if chosen[decision] not in allowed:
                raise SpaceError(f"{name}: {shown(chosen[decision])} is not one of {list(allowed)}")
        width = float(chosen["width"])
        stages = [dataclasses.replace(stage, in_channels=round_filters(stage.in_channels, width, style="v2"),
                                      out_channels=round_filters(stage.out_channels, width, style="v2"))
                  for stage in stages] if width != 1.0 else stages
        changes: dict[str, Any] = {"stages": tuple(stages), "name": f"effnas-{self.name}-candidate",
                                   "activation": chosen["activation"]}
        if width != 1.0:
            changes["stem_channels"] = round_filters(self.backbone.stem_channels, width, style="v2")
        if num_classes is not None:
            changes["num_classes"] = num_classes
        try:
            return self.backbone.replace(**changes)
        except SpecError as error:
            raise SpaceError(f"candidate: {error}") from None

    def params_from_spec(self, spec: ArchSpec) -> dict[str, Any]:
        """The inverse of :meth:`spec_from_params` (e.g. to enqueue the backbone as a trial)."""
        if len(spec.stages) != len(self.stages):
            raise SpaceError(f"spec: has {len(spec.stages)} stages, the space has {len(self.stages)}")
        params: dict[str, Any] = {}
        for index, (stage, allowed) in enumerate(zip(spec.stages, self.stages)):
            se = stage.has_se if stage.op == "mbconv" else (False if False in allowed.se else allowed.se[0])
            values = {"op": stage.op, "kernel": stage.kernel, "expand": stage.expand_ratio,
                      "layers": stage.layers, "se": se}
            for decision, value in values.items():
                if value not in getattr(allowed, decision):
                    raise SpaceError(f"spec: stage {index} {decision}={shown(value)} is outside the space")
                params[param_name(index, decision)] = value
        widths = [w for w in self.network["width"]
                  if round_filters(self.backbone.stem_channels, w, style="v2") == spec.stem_channels]
        for decision, value in (("width", widths[0] if widths else None), ("activation", spec.activation)):
            if value not in self.network[decision]:
                raise SpaceError(f"spec: its {decision} {shown(value)} is outside the space")
            if len(self.network[decision]) > 1:
                params[network_param_name(decision)] = value
        if self.spec_from_params(params, num_classes=spec.num_classes).stages != spec.stages:
            raise SpaceError("spec: its channels, strides or SE ratio differ from the space's backbone")
        return params

    def active_params(self, params: Mapping[str, Any]) -> list[str]:
        """Parameters that change the architecture given ``params`` (a fused stage's ``se`` does not)."""
        return [name for name in self.param_names()
                if not (name.endswith("_se") and params.get(name[:-3] + "_op") == "fused")]

    # ------------------------------------------------------------------ summaries
    def size(self) -> int:
        """The exact number of distinct architectures in the space."""
        return math.prod(stage.size() for stage in self.stages) * math.prod(len(v) for v in self.network.values())

    def largest_params(self) -> list[dict[str, Any]]:
        """The parameters of the space's largest candidates (widest, deepest, largest kernel and expansion) for
        each op: what must fit the device before a search starts."""
        largest: list[dict[str, Any]] = []
        for prefer in ("mbconv", "fused"):
            params: dict[str, Any] = {}
            for index, allowed in enumerate(self.stages):
                params.update({param_name(index, "op"): prefer if prefer in allowed.op else allowed.op[0],
                               param_name(index, "kernel"): max(allowed.kernel),
                               param_name(index, "expand"): max(allowed.expand),
                               param_name(index, "layers"): max(allowed.layers),
                               param_name(index, "se"): True if True in allowed.se else allowed.se[0]})
            params.update({network_param_name("width"): max(self.network["width"]),
                           network_param_name("activation"): self.network["activation"][0]})
            largest.append(params)
        return largest

    def describe(self) -> str:
        """A short human summary for the CLI."""
        c, b = self.config, self.backbone
        source = c["backbone"] if isinstance(c["backbone"], str) else "custom backbone"
        lines = [f"search space {self.name!r}: {source} x width {c['width']:g}, depth {c['depth']:g}, "
                 f"{c['image_size']} px, stem {b.stem_channels} / head {b.head_channels} channels, stem stride {b.stem_stride}"]

        def fmt(values: tuple[Any, ...]) -> str:
            shown = ["on" if v is True else "off" if v is False else str(v) for v in values]
            return "{" + ",".join(shown) + "}"

        for index, (stage, allowed) in enumerate(zip(b.stages, self.stages)):
            lines.append(f"  stage {index}: {stage.in_channels:>4}->{stage.out_channels:<4} stride {stage.stride}  "
                         f"op {fmt(allowed.op)} kernel {fmt(allowed.kernel)} expand {fmt(allowed.expand)} "
                         f"layers {fmt(allowed.layers)} se {fmt(allowed.se)}  ({allowed.size()} choices)")
        searched = {d: v for d, v in self.network.items() if len(v) > 1}
        if searched:
            lines.append("  whole network: " + "  ".join(f"{d} {fmt(v)}" for d, v in searched.items()))
        lines.append(f"  {len(self.param_names())} decisions, {self.size():,} distinct architectures "
                     f"(~10^{math.log10(self.size()):.1f})")
        return "\n".join(lines)


# Spaces a user can name instead of writing a file (``--space small-images``).
NAMED_SPACES: dict[str, dict[str, Any]] = {
    # For images of about 32 px and less (digits, the MNIST family, CIFAR): EfficientNetV2-S's first three stages,
    # full width and half depth, ending at a 4 x 4 map; the paper's space ends at 1 x 1 on such images and spends
    # its time on stages that see no more than a pixel or two. The stem keeps the full image (stride 1) and the
    # first stage halves it, so the first conv sees every pixel for little cost. The network's width and activation
    # are searched too: on a CPU, ReLU steps faster than SiLU, and the best width depends on the time to train.
    "small-images": {"name": "small-images", "width": 1.0, "depth": 0.5, "image_size": 28, "head_channels": 256,
                     "stem_stride": 1,
                     "backbone": ["r2_k3_s2_e1_i24_o24_c1", "r4_k3_s2_e4_i24_o48_c1", "r4_k3_s2_e4_i48_o64_c1"],
                     "network": {"width": [0.75, 1.0, 1.25], "activation": ["silu", "relu"]}},
}


def default_space() -> SearchSpace:
    """EfficientNetV2-S's stages at width 0.25, depth 0.5 and 32 px: the paper's space, proxy-sized."""
    return SearchSpace.from_dict({})


def _yaml(path: Path, text: str) -> Any:
    """YAML through the safe loader, once its events show no alias and no deep nesting."""
    try:
        import yaml
    except ImportError:
        raise SpaceError(f"{path}: reading YAML needs PyYAML (pip install pyyaml), or write JSON") from None
    try:
        depth = 0
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):
                raise SpaceError(f"{path}: YAML aliases (*name) are not allowed in a space file")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > 32:
                    raise SpaceError(f"{path}: nested more than 32 levels deep")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise SpaceError(f"{path}: not valid YAML ({str(error).splitlines()[0][:120]})") from None
    check_depth(data, str(path), SpaceError)
    return data


def load_space(path: str | Path) -> SearchSpace:
    """A named space (:data:`NAMED_SPACES`), or read a space file: JSON, or YAML (``.yaml``/``.yml``) when PyYAML is installed. Either is at most
    :data:`~effnas.search_space.loading.MAX_INPUT_BYTES` of a regular file, nested at most 32 deep; YAML's
    aliases are refused (a "billion laughs" file expands a few lines into gigabytes)."""
    if str(path) in NAMED_SPACES and not Path(path).exists():
        return SearchSpace.from_dict(NAMED_SPACES[str(path)])
    path = Path(path)
    text = read_input(path, "space file", SpaceError)
    if path.suffix.lower() in (".yaml", ".yml"):
        data = _yaml(path, text)
    else:
        data = parse_json(text, str(path), SpaceError) if text.strip() else {}
    try:
        return SearchSpace.from_dict(data)
    except SpaceError as error:
        raise SpaceError(f"{path}: {error}") from None

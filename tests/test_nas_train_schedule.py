"""Algorithm 1 of EfficientNetV2: sizes and regularization per stage, endpoints included; LR schedule."""

import math

import pytest

from effnas.search_space.published import get_spec
from effnas.nas.training.progressive import Ranges, ScheduleError, progressive_schedule, ranges_for, stage_at
from effnas.nas.search.trial import lr_schedule
from effnas.nas.training.train import LRSchedule, TrainConfig
from effnas.search_space import spec_from_dict

TINY = spec_from_dict({"stem_channels": 8, "head_channels": 32, "train_image_size": 16, "eval_image_size": 20,
                       "name": "tiny", "stages": ["r1_k3_s1_e1_i8_o8_c1", "r1_k3_s2_e2_i8_o16_se0.25"]})


def test_v2_s_recipe_follows_algorithm_1_exactly():
    # The paper's Table 6 ranges for EfficientNetV2-S: size 128 -> 300, RandAugment 5 -> 15, dropout 0.1 -> 0.3.
    ranges = ranges_for(get_spec("efficientnetv2-s"))
    assert ranges == Ranges(128, 300, (5.0, 15.0), (0.0, 0.0), (0.1, 0.3))
    schedule = progressive_schedule(4, 350, ranges)
    for i, stage in enumerate(schedule):
        assert stage.index == i
        assert stage.image_size == math.floor(128 + (300 - 128) * i / 3 + 0.5)
        assert stage.randaug == pytest.approx(5 + 10 * i / 3, abs=1e-12)
        assert stage.dropout == pytest.approx(0.1 + 0.2 * i / 3, abs=1e-12)
        assert stage.mixup == 0.0
    assert [s.image_size for s in schedule] == [128, 185, 243, 300]
    # Endpoints are exact, not merely close.
    assert (schedule[0].image_size, schedule[0].randaug, schedule[0].dropout) == (128, 5.0, 0.1)
    assert (schedule[-1].image_size, schedule[-1].randaug, schedule[-1].dropout) == (300, 15.0, 0.3)


def test_epochs_are_split_into_contiguous_stages():
    schedule = progressive_schedule(4, 10, Ranges(8, 32, (0.0, 9.0), (0.0, 0.3), (0.0, 0.3)))
    assert [(s.first_epoch, s.end_epoch) for s in schedule] == [(0, 2), (2, 5), (5, 7), (7, 10)]
    assert sum(s.epochs for s in schedule) == 10
    assert [stage_at(schedule, e).index for e in range(10)] == [0, 0, 1, 1, 1, 2, 2, 3, 3, 3]
    assert [s.randaug for s in schedule] == [0.0, 3.0, 6.0, 9.0]
    assert [s.mixup for s in schedule] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    with pytest.raises(ScheduleError):
        stage_at(schedule, 10)


def test_one_stage_is_the_final_settings():
    (stage,) = progressive_schedule(1, 5, Ranges(8, 32, (2.0, 9.0), (0.1, 0.3), (0.05, 0.25)))
    assert (stage.image_size, stage.randaug, stage.mixup, stage.dropout) == (32, 9.0, 0.3, 0.25)
    assert (stage.first_epoch, stage.end_epoch) == (0, 5)


def test_recipe_flags_and_defaults():
    # Flags override the recipe; --image-size scales the recipe's start size with it (128/300 of 64 -> 27).
    ranges = ranges_for(get_spec("efficientnetv2-m"), image_size=64, mixup=(0.0, 0.1))
    assert ranges.max_image_size == 64
    assert ranges.min_image_size == 32  # 64 * 128/384 = 21, raised to the total stride 32
    assert ranges.randaug == (5.0, 20.0) and ranges.mixup == (0.0, 0.1) and ranges.dropout == (0.1, 0.4)
    # No recipe in the spec: the paper's V2-S ranges at the spec's own size.
    ranges = ranges_for(TINY)
    assert ranges == Ranges(7, 16, (5.0, 15.0), (0.0, 0.0), (0.1, 0.3))


@pytest.mark.parametrize("kwargs, message", [
    ({"min_image_size": 2}, "total stride 4"),
    ({"min_image_size": 40}, "min (40) <= max (16)"),
    ({"randaug": (10.0, 5.0)}, "randaug range"),
    ({"dropout": (0.0, 1.5)}, "dropout range"),
])
def test_bad_ranges_are_one_line_errors(kwargs, message):
    with pytest.raises(ScheduleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ranges_for(TINY, **kwargs)


def test_more_stages_than_epochs_is_refused():
    with pytest.raises(ScheduleError, match="4 stages need at least 4 epochs"):
        progressive_schedule(4, 3, Ranges(8, 16, (0, 0), (0, 0), (0, 0)))


def test_learning_rate_warms_up_then_decays():
    config = TrainConfig(epochs=10, batch_size=64, optimizer="sgd", warmup_epochs=1.0)
    lr = LRSchedule.for_run(config, steps_per_epoch=10)
    peak = 0.1 * 64 / 256
    assert lr.peak == pytest.approx(peak)
    assert lr(0) == pytest.approx(peak / 10) and lr(9) == pytest.approx(peak)
    values = [lr(s) for s in range(10, 100)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert lr(99) < 0.01 * peak
    exponential = LRSchedule.for_run(TrainConfig(epochs=10, batch_size=128, schedule="exponential", warmup_epochs=0.0), 10)
    assert exponential(24) == pytest.approx(exponential.peak * 0.97)  # x0.97 every 2.4 epochs


def test_nas_train_and_proxy_trials_follow_one_warmup_cosine_curve():
    # Same peak, length and warm-up: `nas train`'s cosine schedule and a proxy trial's rates are the same numbers.
    config = TrainConfig(epochs=10, batch_size=64, optimizer="sgd", warmup_epochs=1.0)
    train_rates = [LRSchedule.for_run(config, steps_per_epoch=10)(step) for step in range(100)]
    assert lr_schedule(0.1 * 64 / 256, 100, 0.1) == train_rates

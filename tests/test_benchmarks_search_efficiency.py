"""The arithmetic behind ``benchmarks.search_efficiency``'s claims, on small fabricated runs with known answers, and
the practitioner's task checked against effnas's: the same search space, network sizes and head."""

from __future__ import annotations

import math
import random

import pytest

from benchmarks import practitioner_script as script
from benchmarks import search_efficiency as bench


def _trial(seconds: float, reward: float | None) -> dict:
    return {"seconds": seconds, "state": "PRUNED" if reward is None else "COMPLETE", "reward": reward}


RUN = [_trial(10, 0.90), _trial(15, None), _trial(20, 1.00), _trial(25, None), _trial(30, 0.95), _trial(40, 1.10)]


def test_best_by_counts_only_finished_trials_up_to_the_time():
    assert math.isnan(bench.best_by(RUN, 9.9))
    assert bench.best_by(RUN, 10) == 0.90
    assert bench.best_by(RUN, 29) == 1.00  # the stopped trial at 25 s has no reward to count
    assert bench.best_by(RUN, 35) == 1.00  # a lower finish does not lower the best
    assert bench.best_by(RUN, 40) == 1.10
    assert bench.final_best(RUN) == 1.10


def test_pass_time_and_ratio():
    assert bench.pass_time(RUN, 1.00) == 20
    assert bench.pass_time(RUN, 0.95) == 20  # the first finish at or above the target
    assert bench.pass_time(RUN, 1.2) is None
    assert bench.pass_ratio(RUN, 1.05, other_wall=80) == pytest.approx(0.5)
    assert bench.pass_ratio(RUN, 1.2, other_wall=80) is None


def test_time_averaged_best_counts_nothing_finished_as_zero():
    # by 10 s: 0.90; by 20 s: 1.00; by 30 s: 0.95 is lower, so 1.00; by 40 s: 1.10
    assert bench.time_averaged_best(RUN, 40, shares=(0.25, 0.5, 0.75, 1.0)) == pytest.approx((0.9 + 1 + 1 + 1.1) / 4)
    assert bench.time_averaged_best(RUN, 20, shares=(0.25, 1.0)) == pytest.approx((0 + 1.0) / 2)


def test_stopped_winners_and_closest_call():
    finals, best_then = [0.80, 1.02, 0.99], [1.00, 1.00, 1.00]
    assert bench.stopped_winners(finals, best_then) == 1
    assert bench.closest_call(finals, best_then) == pytest.approx(0.02)
    assert bench.stopped_winners([0.8, 0.9], [1.0, 1.0]) == 0
    assert bench.closest_call([0.8, 0.9], [1.0, 1.0]) == pytest.approx(-0.1)
    assert bench.stopped_winners([0.5], [math.nan]) == 1  # nothing to beat yet: it would have led
    assert bench.stopped_winners([1.0], [1.0]) == 0  # level is not above
    with pytest.raises(ValueError):
        bench.stopped_winners([1.0], [])


def test_se_of_difference():
    # var([1, 2, 3]) = 1 over 3 values, var([2, 2, 2]) = 0: SE = sqrt(1 / 3)
    assert bench.se_of_difference([1, 2, 3], [2, 2, 2]) == pytest.approx(math.sqrt(1 / 3))
    # var([0, 2]) = 2 over 2, var([1, 3, 5, 7]) = 20 / 3 over 4: SE = sqrt(1 + 5 / 3)
    assert bench.se_of_difference([0, 2], [1, 3, 5, 7]) == pytest.approx(math.sqrt(1 + 5 / 3))
    assert math.isnan(bench.se_of_difference([1.0], [1.0, 2.0]))


def test_verdict_needs_two_standard_errors():
    assert bench.verdict(0.05, 0.02) == "ahead"
    assert bench.verdict(-0.05, 0.02) == "behind"
    assert bench.verdict(0.03, 0.02) == "level (within 2 SE)"
    assert bench.verdict(-40.0, 10.0, higher="slower", lower="faster") == "faster"
    assert bench.verdict(0.05, math.nan) == "no verdict (one seed)"
    assert bench.verdict(math.nan, 0.01) == "-"


def test_mean_std_and_four():
    assert bench.mean_std([1.0, 2.0, 3.0]) == "2.0000 ± 1.0000"
    assert bench.mean_std([2.5]) == "2.5000"
    assert bench.mean_std([10.0, 20.0], 1) == "15.0 ± 7.1"
    assert bench.four(1.12345) == "1.1235"
    assert bench.four(math.nan) == "-" and bench.four(None) == "-"


def test_draw_sample_is_fixed_and_keeps_order():
    items = list(range(50))
    first, again = bench.draw_sample(items, 20), bench.draw_sample(items, 20)
    assert first == again and len(first) == 20 and first == sorted(first)
    assert bench.draw_sample(items[:5], 20) == items[:5]
    assert bench.draw_sample(items, 20, seed=1) != first


def test_rewards_against_base():
    base_ms, params_ratio = 2.0, 1.5
    candidate_score = 0.9 * 4.0 ** script.W * params_ratio ** script.V
    records = [{"state": "BASE", "score": 0.8 * base_ms ** script.W, "step_ms": base_ms},
               {"state": "COMPLETE", "score": candidate_score, "step_ms": 4.0}, {"state": "PRUNED"}]
    base, candidate, pruned = script.rewards_against_base(records)
    assert base["reward"] == pytest.approx(0.8)  # the base's reward is its accuracy
    assert candidate["reward"] == pytest.approx(0.9 * (4.0 / base_ms) ** script.W * params_ratio ** script.V)
    assert "reward" not in pruned
    with pytest.raises(RuntimeError):
        script.rewards_against_base(records[1:])


def _run(arm: str, wall: float, best: float, trials: list[dict]) -> dict:
    return {"arm": arm, "wall": wall, "best": best, "accuracy": 0.9, "stopped": 1, "trials": trials}


def test_difference_and_curve_rows():
    by_arm = {"effnas": [_run("effnas", 50, 1.10, RUN), _run("effnas", 70, 1.12, RUN)],
              "practitioner": [_run("practitioner", 100, 1.00, [_trial(60, 1.0)]),
                               _run("practitioner", 100, 1.02, [_trial(60, 1.02)])]}
    rows = bench.difference_rows(by_arm)
    reward_row, wall_row = rows
    assert reward_row["difference of means"] == "0.1000" and reward_row["verdict"] == "ahead"
    assert wall_row["difference of means"] == "-40.0" and wall_row["verdict"] == "faster"
    curve = bench.curve_rows(by_arm, 100)
    assert curve[1]["by s"] == 20 and curve[1]["effnas"] == "1.0000" and curve[1]["practitioner"] == "-"
    assert curve[1]["verdict"] == "-"
    assert curve[-1]["effnas - practitioner"] == "0.0900" and curve[-1]["verdict"] == "ahead"
    assert [row["arm"] for row in bench.arm_rows(by_arm)] == ["effnas", "practitioner"]


def test_pass_sentence():
    mine = {"trials": RUN, "budget": 200}
    assert "at 0.50x the practitioner's wall time (80 s)" in bench.pass_sentence(mine, {"best": 1.05, "wall": 80})
    assert "does not reach" in bench.pass_sentence(mine, {"best": 1.2, "wall": 80})


def test_the_practitioner_searches_effnas_space_with_its_head():
    from effnas.models import build_model
    from effnas.models.profile import count_params
    from effnas.search_space.space import SearchSpace

    space = SearchSpace.from_dict(bench.SPACE)
    for stage in range(len(script.V2_S)):
        for decision, values in script.stage_options(stage).items():
            assert tuple(values) == tuple(space.choices(f"s{stage}_{decision}")), (stage, decision)
    assert script.divisible(script.HEAD * script.WIDTH) == space.backbone.head_channels
    base_params = space.params_from_spec(space.backbone)
    assert [(base_params[f"s{i}_op"], base_params[f"s{i}_expand"], base_params[f"s{i}_kernel"],
             base_params[f"s{i}_layers"], base_params[f"s{i}_se"]) for i in range(6)] == script.base_choices()
    draw = random.Random(0)
    for _ in range(3):  # same parameter count, block for block, with SE on and off
        params, choices = {}, []
        for stage in range(len(script.V2_S)):
            picked = {name: draw.choice(values) for name, values in script.stage_options(stage).items()}
            params |= {f"s{stage}_{name}": value for name, value in picked.items()}
            choices.append((picked["op"], picked["expand"], picked["kernel"], picked["layers"],
                            picked["op"] == "mbconv" and picked["se"]))
        spec = space.spec_from_params(params, num_classes=10).replace(image_channels=1)
        assert count_params(script.build(choices, 10, 1)) == count_params(build_model(spec))


def test_every_pruner_setting_builds():
    import optuna

    for name in bench.PRUNERS:
        assert isinstance(script.make_pruner(name), optuna.pruners.BasePruner)
    assert bench.DEFAULT_PRUNER in bench.PRUNERS


def test_tune_pruner_keeps_the_highest_time_averaged_best(monkeypatch, tmp_path):
    """Each setting runs once on the tuning seed; the choice and its reason land in the results notes."""
    finals = {"hyperband-min1": [_trial(50, 1.0)], "hyperband-min2": [_trial(10, 1.0)],
              "median-warmup1": [_trial(90, 1.2)], "median-warmup2": [_trial(30, 0.9)], "none": [_trial(100, 1.1)]}
    calls = []

    def fake_run_arm(arm, seed, budget, pruner, root):
        calls.append((arm, seed, budget, pruner))
        trials = finals[pruner]
        return {"arm": arm, "seed": seed, "budget": budget, "wall": trials[-1]["seconds"],
                "best": bench.final_best(trials), "accuracy": 0.9, "stopped": 0, "trials": trials}

    monkeypatch.setattr(bench, "run_arm", fake_run_arm)
    bench.main(["--tune-pruner", "--budget", "5", "--quick", "--results-dir", str(tmp_path)])
    assert calls == [("practitioner", bench.TUNING_SEED, 5, name) for name in bench.PRUNERS]
    text = (tmp_path / "search_efficiency-pruner-quick.md").read_text()
    # by tenths of 100 s: hyperband-min2 has 1.0 from 10 s on (1.0 on average), median-warmup1 1.2 only from 90 s
    assert "chosen: hyperband-min2" in text and "--pruner hyperband-min2" in text
    assert f"seed {bench.TUNING_SEED}" in text


def test_main_tables_from_fabricated_runs(monkeypatch, tmp_path):
    """The main run's tables, from fabricated searches: arms rotated per seed, the long row, the pass sentence and
    the stopped-candidate check, all in the results file."""
    order = []

    def fake_run_arm(arm, seed, budget, pruner, root):
        order.append((arm, seed, budget))
        shift = 0.01 * seed
        trials = {"effnas": [_trial(20, 1.05 + shift), _trial(30, None), _trial(40, 1.10 + shift)],
                  "effnas, no stop": [_trial(60, 1.04 + shift), _trial(120, 1.08 + shift)],
                  "practitioner": [_trial(50, 1.02 + shift), _trial(80, 1.07 + shift)]}[arm]
        return {"arm": arm, "seed": seed, "budget": budget, "wall": trials[-1]["seconds"] + 5,
                "best": bench.final_best(trials), "accuracy": 0.95, "stopped": 1, "trials": trials}

    def fake_check(run, sample_size):
        return {"seed": run["seed"], "trials": run["budget"], "stopped": 1, "sampled": min(1, sample_size),
                "above best when stopped": 0}

    monkeypatch.setattr(bench, "run_arm", fake_run_arm)
    monkeypatch.setattr(bench, "check_stopped", fake_check)
    rows = bench.main(["--budget", "6", "--seeds", "2", "--long-budget", "9", "--results-dir", str(tmp_path)])
    assert order[:6] == [("effnas", 0, 6), ("effnas, no stop", 0, 6), ("practitioner", 0, 6),
                         ("effnas, no stop", 1, 6), ("practitioner", 1, 6), ("effnas", 1, 6)]
    assert order[6:] == [("effnas", bench.LONG_SEED, 9), ("practitioner", bench.LONG_SEED, 9)]
    assert rows[0]["best reward (mean ± std)"] == "1.1050 ± 0.0071"
    text = (tmp_path / "search_efficiency-6.md").read_text()  # a budget other than the default keeps its own file
    # practitioner finishes at 85 s with 1.07 (seed 0) and 1.08 (seed 1); effnas reaches 1.10 and 1.11 at 40 s
    assert "seed 0: 0.47x; seed 1: 0.47x" in text
    assert "effnas passes the practitioner's final best reward (1.0700) at 0.47x the practitioner's wall time" in text
    assert "## 9 trials, one seed: wall time and best reward" in text
    assert "## stopped candidates trained to the end: would any have led?" in text
    assert "± is the sample standard deviation over seeds" in text

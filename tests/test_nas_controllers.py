"""Every controller on real Optuna studies with a cheap synthetic objective: valid, seeded, learning,
and (for rl/evolution) rebuilt from the study on resume."""

from __future__ import annotations

import optuna
import pytest
import torch

from effnas.nas.search.controllers import (CONTROLLERS, ControllerError, EvolutionSampler, RLSampler, is_multi_objective,
                             make_sampler, reward_of, study_directions, study_objectives)
from effnas.search_space import SearchSpace
from effnas.errors import EffnasError

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = SearchSpace.from_dict({
    "name": "tiny", "backbone": ["r1_k3_s1_e1_i8_o8_c1", "r2_k3_s2_e4_i8_o16", "r2_k3_s2_e4_i16_o24_se0.25"],
    "width": 1.0, "depth": 1.0, "image_size": 16, "head_channels": 32})
TARGET = {name: SPACE.choices(name)[-1] for name in SPACE.param_names()}  # mbconv k5 e6, most layers, SE


def synthetic_reward(params: dict) -> float:
    """Fraction of the decisions that matter which agree with a hidden target architecture."""
    active = SPACE.active_params(params)
    return sum(params[name] == TARGET[name] for name in active) / len(active)


def objective(trial: optuna.Trial):
    spec = SPACE.sample(trial, num_classes=10)
    if trial.user_attrs.get("fail"):
        raise ValueError("a candidate that crashes")
    reward = synthetic_reward(trial.params)
    trial.set_user_attr("reward", reward)
    if len(trial.study.directions) == 3:  # accuracy up, step time down, params down
        return reward, float(spec.num_blocks), float(sum(s.expand_ratio for s in spec.stages))
    return reward


def make_study(name: str, seed: int, storage: str | None = None, study_name: str = "effnas") -> optuna.Study:
    return optuna.create_study(storage=storage, study_name=study_name, load_if_exists=True,
                               directions=study_directions(name), sampler=make_sampler(name, SPACE, seed))


def param_sequence(study: optuna.Study) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in sorted(study.trials, key=lambda t: t.number)]


def rewards(study: optuna.Study) -> list[float]:
    return [t.user_attrs["reward"] for t in sorted(study.trials, key=lambda t: t.number)]


def test_names_and_errors() -> None:
    assert tuple(CONTROLLERS) == ("random", "tpe", "nsga2", "rl", "evolution")
    assert [is_multi_objective(n) for n in CONTROLLERS] == [False, False, True, False, False]
    assert study_directions("nsga2") == ["maximize", "minimize", "minimize"]
    for name in CONTROLLERS:
        assert isinstance(make_sampler(name, SPACE, 0), optuna.samplers.BaseSampler)
    with pytest.raises(ControllerError, match="unknown controller 'ppo'") as info:
        make_sampler("ppo", SPACE, 0)
    assert isinstance(info.value, EffnasError)


@pytest.mark.parametrize("name", CONTROLLERS)
def test_controller_is_seeded_and_deterministic(name) -> None:
    budget = 26  # past TPE's 10 startup trials, NSGA-II's first generation and evolution's population
    runs = {}
    for key, seed in (("a", 7), ("b", 7), ("other", 8)):
        runs[key] = make_study(name, seed)
        runs[key].optimize(objective, n_trials=budget)
    assert param_sequence(runs["a"]) == param_sequence(runs["b"])
    assert param_sequence(runs["a"]) != param_sequence(runs["other"])
    for trial in runs["a"].trials:  # every sample is a full, valid point of the space
        assert set(trial.params) == set(SPACE.param_names())
        SPACE.spec_from_params(trial.params)


@pytest.mark.slow
@pytest.mark.parametrize("name", CONTROLLERS)
def test_controller_resumes_from_a_sqlite_study(name, tmp_path) -> None:
    """A fresh sampler continuing a stored study: SQLite and in-memory agree, and rl/evolution rebuild
    their state from the history, proposing exactly what the uninterrupted run proposed."""
    k = 21
    whole = make_study(name, seed=3)
    whole.enqueue_trial({}, user_attrs={"fail": True})  # a failed trial is ignored by rl and evolution
    whole.optimize(objective, n_trials=k + 2, catch=(ValueError,))
    assert whole.trials[0].state == optuna.trial.TrialState.FAIL

    resumed = {}
    for storage in (None, f"sqlite:///{tmp_path / 'study.db'}"):
        study = make_study(name, seed=3, storage=storage)  # a new process: a new, untrained sampler
        study.add_trials(whole.trials[:k])
        study.optimize(objective, n_trials=2)
        resumed[storage is None] = param_sequence(study)
    assert resumed[True] == resumed[False]
    if name in ("rl", "evolution"):
        assert resumed[False] == param_sequence(whole)


@pytest.mark.parametrize("name", ["rl", "evolution"])
def test_learning_controllers_beat_random(name) -> None:
    budget, n = 80, 20
    random_study = make_study("random", seed=0)
    random_study.optimize(objective, n_trials=budget)
    study = make_study(name, seed=0)
    study.optimize(objective, n_trials=budget)
    first, last, random_last = rewards(study)[:n], rewards(study)[-n:], rewards(random_study)[-n:]
    assert sum(last) / n > sum(first) / n + 0.15, (first, last)
    assert sum(last) / n > sum(random_last) / n + 0.15, (last, random_last)
    if name == "rl":  # the policy itself has moved towards the target, and replaying rebuilds it
        trained = study.sampler
        assert synthetic_reward(trained.greedy_params()) > 0.8 > synthetic_reward(RLSampler(SPACE).greedy_params())
        replayed = RLSampler(SPACE, seed=0)
        replayed.catch_up(study, before=budget - 1)
        assert replayed.learned == trained.learned == set(range(budget - 1))
        assert replayed.greedy_params() == trained.greedy_params()
        assert all(torch.equal(a, b) for a, b in zip(replayed.policy.parameters(), trained.policy.parameters()))


@pytest.mark.slow  # trains the controller's policy over many draws
def test_rl_draws_again_rather_than_propose_an_architecture_the_study_has() -> None:
    """A converged policy's mode is proposed once; then its next draws, unless all of them are known."""
    study = make_study("rl", seed=0)
    study.optimize(objective, n_trials=80)
    seen = param_sequence(study)
    assert len(set(seen)) == len(seen)  # this space is large enough that the draws always find a new one
    stuck = make_study("rl", seed=0)
    stuck.sampler.max_draws = 1  # the policy's first draw, whatever it is
    stuck.optimize(objective, n_trials=80)
    assert len(set(param_sequence(stuck))) < 80  # without the rule the converged policy repeats itself


def test_nsga2_searches_accuracy_and_each_cost_the_reward_weighs() -> None:
    assert study_objectives("nsga2") == ("accuracy", "step_time_ms", "params")
    assert study_objectives("nsga2", reward_w=0.0) == ("accuracy", "params")
    assert study_objectives("nsga2", reward_w=0.0, reward_v=0.0) == ("accuracy",)
    assert study_directions("nsga2", reward_v=0.0) == ["maximize", "minimize"]
    assert study_objectives("tpe") == () and study_directions("tpe", 0.0, 0.0) == ["maximize"]


def test_rl_reads_the_value_when_no_reward_attr() -> None:
    study = optuna.create_study(direction="maximize", sampler=RLSampler(SPACE, seed=0))
    study.optimize(lambda t: synthetic_reward({n: t.suggest_categorical(n, SPACE.choices(n))
                                               for n in SPACE.param_names()}), n_trials=3)
    assert [reward_of(t) for t in study.trials] == [t.value for t in study.trials]
    assert study.sampler.learned == {0, 1}


def test_evolution_children_are_one_mutation_from_the_population() -> None:
    sampler = EvolutionSampler(SPACE, seed=0, population_size=10, sample_size=3)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=40)
    trials = sorted(study.trials, key=lambda t: t.number)
    for child in trials[10:]:
        population = trials[child.number - 10:child.number]  # aging: only the last 10 completed trials
        child_spec = SPACE.spec_from_params(child.params)
        parents = [parent for parent in population
                   if sum(child.params[n] != parent.params[n] for n in SPACE.active_params(parent.params)) == 1]
        assert any(SPACE.spec_from_params(parent.params) != child_spec for parent in parents), child.number


def test_enqueued_architectures_override_the_controllers() -> None:
    backbone = SPACE.params_from_spec(SPACE.backbone)
    for name in CONTROLLERS:
        study = make_study(name, seed=0)
        study.enqueue_trial(backbone)
        study.optimize(objective, n_trials=2)
        assert study.trials[0].params == backbone

"""A MnasNet-style reinforcement-learning controller as an Optuna sampler.

An LSTM policy emits one token per decision of the space (stage by stage: op, kernel, expand, layers,
se), each decision with its own embedding of the previous token and its own softmax head, as in
NASNet/MnasNet/ENAS. It is trained with REINFORCE: after each completed trial, one Adam step on
``-(reward - baseline) / scale * log p(architecture) - entropy_weight * H``, where the baseline is an
exponential moving average of past rewards and ``scale`` a moving average of their spread (so the
learning rate does not depend on whether rewards differ by 0.001 or by 10). Logits pass through
``tanh_constant * tanh(.)`` (ENAS) so no choice collapses to probability 1 early in a short search.

The policy is rebuilt from the study alone: the initial weights come from ``seed``, and before each
sample the controller learns from every completed trial it has not seen yet, in trial-number order,
reading ``user_attrs["reward"]`` (or the trial's value). Sampling uses a generator seeded by
``(seed, trial.number)``. So a resumed sequential search replays the same updates and proposes the
same next architecture as an uninterrupted one. Failed trials are ignored (see :mod:`.base`).

A policy that has converged keeps drawing the architectures it already tried, which teach it nothing new (the
search reuses their records, and ends after a long run of them). So a proposal is the policy's first draw, of up to
``max_draws``, that no trial of the study has, each draw a little warmer than the one before: sampling without
replacement, in effect, outwards from the policy's mode.
"""

from __future__ import annotations

import threading
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial
from torch import nn

from effnas.search_space import SearchSpace

from effnas.nas.search.controllers.base import SpaceSampler, rewarded_history, trial_seed


class Policy(nn.Module):
    """LSTM controller: one step per decision, decision-specific input embeddings and output heads.

    The per-decision embeddings and softmax heads are stored as disjoint slices of one table and one
    linear layer (``offsets``), which is the same model with far fewer tensors for the optimizer.
    """

    def __init__(self, sizes: list[int], hidden: int = 64, tanh_constant: float = 2.5) -> None:
        super().__init__()
        self.tanh_constant = tanh_constant
        self.offsets = [0]
        for n in sizes:
            self.offsets.append(self.offsets[-1] + n)
        self.start = nn.Parameter(torch.zeros(1, hidden))
        self.cell = nn.LSTMCell(hidden, hidden)
        self.embedding = nn.Embedding(self.offsets[-1], hidden)
        self.heads = nn.Linear(hidden, self.offsets[-1])
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.uniform_(self.heads.weight, -0.1, 0.1)  # start close to the uniform distribution
        nn.init.zeros_(self.heads.bias)

    def forward(self, actions: list[int] | None = None, generator: torch.Generator | None = None,
                greedy: bool = False, temperature: float = 1.0) -> tuple[list[int], torch.Tensor, torch.Tensor]:
        """Sample (or, given ``actions``, score) one architecture: (actions, sum log p, sum entropy)."""
        x, state = self.start, None
        chosen: list[int] = []
        log_prob = entropy = torch.zeros(())
        for index, (low, high) in enumerate(zip(self.offsets[:-1], self.offsets[1:])):
            state = self.cell(x, state)
            logits = self.tanh_constant * torch.tanh(self.heads(state[0])[0, low:high]) / temperature
            log_p = torch.log_softmax(logits, dim=-1)
            if actions is not None:
                action = actions[index]
            elif greedy:
                action = int(log_p.argmax())
            else:
                action = int(torch.multinomial(log_p.exp(), 1, generator=generator))
            chosen.append(action)
            log_prob = log_prob + log_p[action]
            entropy = entropy - (log_p.exp() * log_p).sum()
            x = self.embedding(torch.tensor([low + action]))
        return chosen, log_prob, entropy


class RLSampler(SpaceSampler):
    """REINFORCE with a moving-average baseline over an LSTM policy (MnasNet's controller, open form)."""

    def __init__(self, space: SearchSpace, seed: int = 0, hidden: int = 64, lr: float = 0.01,
                 baseline_decay: float = 0.8, entropy_weight: float = 0.01, tanh_constant: float = 2.5,
                 max_draws: int = 50) -> None:
        super().__init__(space, seed)
        self.names = list(self._distributions)
        self.lr, self.baseline_decay, self.entropy_weight = lr, baseline_decay, entropy_weight
        self.max_draws = max_draws
        with torch.random.fork_rng(devices=[]):  # seeded weights without touching the global stream
            torch.manual_seed(self.seed)
            self.policy = Policy([len(self._distributions[n].choices) for n in self.names], hidden, tanh_constant)
        self.optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr, foreach=True)
        self.baseline: float | None = None
        self.spread, self.updates = 0.0, 0  # EMA of |reward - baseline| and its bias correction
        self.learned: set[int] = set()
        self._study_name: str | None = None
        self._lock = threading.Lock()  # Optuna may call a sampler from several threads (n_jobs > 1)

    # ------------------------------------------------------------------ learning
    def learn(self, params: dict[str, Any], reward: float) -> None:
        """One REINFORCE step on a finished architecture and its reward."""
        actions = self.actions_of(params)
        if actions is None:
            return
        if self.baseline is None:
            self.baseline = reward
        decay = self.baseline_decay
        advantage = reward - self.baseline
        self.baseline = decay * self.baseline + (1 - decay) * reward
        if advantage == 0.0 and self.updates == 0:
            return  # nothing to compare the very first reward with
        self.updates += 1
        self.spread = decay * self.spread + (1 - decay) * abs(advantage)
        spread = self.spread / (1 - decay ** self.updates)
        scaled = advantage / spread if spread > 1e-12 else 0.0
        _, log_prob, entropy = self.policy(actions)
        loss = -scaled * log_prob - self.entropy_weight * entropy
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def actions_of(self, params: dict[str, Any]) -> list[int] | None:
        """Token indices of a trial's parameters (None if it does not belong to this space)."""
        try:
            return [self._distributions[name].choices.index(params[name]) for name in self.names]
        except (KeyError, ValueError):
            return None

    def catch_up(self, study: optuna.Study, before: int) -> None:
        """Learn from every completed trial numbered below ``before`` not learned yet, in order."""
        if self._study_name not in (None, study.study_name):
            raise RuntimeError("an RLSampler learns from one study; make a new sampler for another")
        self._study_name = study.study_name
        for trial, reward in rewarded_history(study):
            if trial.number < before and trial.number not in self.learned:
                self.learned.add(trial.number)
                self.learn(trial.params, reward)

    # ------------------------------------------------------------------ sampling
    def propose(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        generator = torch.Generator().manual_seed(trial_seed(self.seed, trial.number))
        known = {self.architecture(t.params) for t in study.get_trials(deepcopy=False) if t.number != trial.number}
        with self._lock:
            self.catch_up(study, before=trial.number)
            with torch.no_grad():
                for draw in range(self.max_draws):  # the first draw the study has not seen
                    actions, _, _ = self.policy(generator=generator, temperature=1.0 + draw / 10)
                    params = {name: self._distributions[name].choices[a] for name, a in zip(self.names, actions)}
                    if self.architecture(params) not in known:
                        break
        return params

    def architecture(self, params: dict[str, Any]) -> tuple:
        """The decisions that shape the network (a fused stage's SE switch does not)."""
        return tuple((name, params.get(name)) for name in self.space.active_params(params))

    def greedy_params(self) -> dict[str, Any]:
        """The policy's most likely architecture right now (for inspection and tests)."""
        with torch.no_grad():
            actions, _, _ = self.policy(greedy=True)
        return {name: self._distributions[name].choices[a] for name, a in zip(self.names, actions)}

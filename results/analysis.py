"""What the winners have in common: the best trials, and per-stage choice frequencies among them."""

from __future__ import annotations

import math

import pandas as pd

from effnas.results.record import FAIL_REASON_ATTR, INTERRUPTED_ATTR, REUSE_ATTR
from effnas.results.study import choice_columns, completed, CHOICE_PATTERN


def top_trials(frame: pd.DataFrame, fraction: float = 0.1) -> pd.DataFrame:
    """The best ``fraction`` of completed trials by reward (at least one), best first."""
    done = completed(frame)
    key = "reward" if done["reward"].notna().any() else "accuracy"
    count = max(1, math.ceil(fraction * len(done))) if len(done) else 0
    return done.sort_values([key, "number"], ascending=[False, True]).head(count)


def running_best(frame: pd.DataFrame) -> pd.DataFrame:
    """Reward of each completed trial in trial order, with the best reward seen so far."""
    done = completed(frame).sort_values("number")
    done = done[done["reward"].notna()]
    return pd.DataFrame({"number": done["number"].to_numpy(), "reward": done["reward"].to_numpy(),
                         "best": done["reward"].cummax().to_numpy()})


def choice_frequencies(frame: pd.DataFrame, fraction: float = 0.1) -> pd.DataFrame:
    """Share of each choice per stage among all completed trials and among the top ``fraction``.

    One row per (stage, kind, choice) with columns ``all`` and ``top`` in [0, 1]; a choice that only
    the also-rans made shows ``top`` = 0, so the comparison shows what the search converged to.
    """
    done, top = completed(frame), top_trials(frame, fraction)
    rows = []
    for column in choice_columns(frame):
        stage, kind = CHOICE_PATTERN.match(column).groups()
        shares_all = done[column].value_counts(normalize=True)
        shares_top = top[column].value_counts(normalize=True)
        for choice in sorted(shares_all.index, key=lambda v: (isinstance(v, str), v)):
            rows.append({"stage": int(stage), "kind": kind, "choice": choice, "all": float(shares_all[choice]),
                         "top": float(shares_top.get(choice, 0.0))})
    return pd.DataFrame(rows, columns=["stage", "kind", "choice", "all", "top"])


def state_counts(frame: pd.DataFrame) -> dict[str, int]:
    """Trials by outcome; a killed search's trials are ``interrupted``, apart from real failures; early stopping's
    are ``stopped early``; a repeated architecture's record is ``reused`` whatever its trial's outcome was."""
    reused = frame[REUSE_ATTR].notna() if REUSE_ATTR in frame else pd.Series(False, index=frame.index)
    own = frame[~reused]
    failed = own["state"].eq("FAIL")
    counts = {"completed": int(own["state"].eq("COMPLETE").sum()),
              "stopped early": int(own["state"].eq("PRUNED").sum()),
              "failed": int((failed & ~own[INTERRUPTED_ATTR]).sum()),
              "interrupted": int((failed & own[INTERRUPTED_ATTR]).sum())}
    for state in ("RUNNING", "WAITING"):
        counts[state.lower()] = int(own["state"].eq(state).sum())
    counts["reused"] = int(reused.sum())
    return counts


def failure_counts(frame: pd.DataFrame) -> pd.DataFrame:
    """Failed trials grouped by reason; trials cut off by a killed search are counted apart."""
    failed = frame[frame["state"].eq("FAIL")]
    # Group on the first line of the reason: the message, not the traceback-ish tail.
    reasons = failed[FAIL_REASON_ATTR].fillna("(no reason recorded)").astype(str).str.split("\n").str[0].str[:200]
    reasons = reasons.where(~failed[INTERRUPTED_ATTR], "interrupted (search was stopped)")
    counts = reasons.value_counts()
    return pd.DataFrame({"reason": counts.index, "trials": counts.to_numpy()})

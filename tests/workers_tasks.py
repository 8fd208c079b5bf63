"""Tasks for the worker-pool tests: each behaves like a trial that finishes, fails, hangs or crashes."""

import os
import time


def behave(spec: dict, settings: dict, seed: int) -> dict:
    action = spec["action"]
    if action == "ok":
        return {"value": spec.get("value", 0) * 2, "pid": os.getpid()}
    if action == "raise":
        raise RuntimeError("candidate exploded")
    if action == "diverge":  # what nas.trial raises for a candidate that failed in a way it understands
        from effnas.nas.search.trial import TrialError

        raise TrialError("diverged: training loss is NaN at epoch 1")
    if action == "sleep":  # a trial that takes a moment, then finishes
        time.sleep(spec["seconds"])
        return {"value": 0, "pid": os.getpid()}
    if action == "where":  # which process ran it, under which parent, in which folder
        return {"pid": os.getpid(), "parent": os.getppid(), "cwd": os.getcwd()}
    if action == "hang":
        time.sleep(60)
    if action == "die":
        os._exit(3)
    raise ValueError(action)


def allocate(spec: dict, settings: dict, seed: int) -> dict:
    """Hold ``gib`` GiB of touched memory for a moment, like a candidate whose activations are that big."""
    import torch

    block = torch.ones(int(spec["gib"] * 2**30) // 4)
    return {"sum": float(block[:10].sum()), "pid": os.getpid()}

"""``python tests/fault_injection.py search ...`` runs the real ``nas`` CLI with a fault planted in candidate models.

Used by tests/test_faults_trials.py. The patch sits at module level, outside ``if __name__ == "__main__"``, so
the worker processes a search spawns (which import this file as ``__mp_main__``) carry it too. Every 5x5
convolution (in the test's space only stage 0 may pick kernel 5, and the backbone does not) does what
``EFFNAS_INJECT`` says; ``EFFNAS_INJECT_ALL=1`` plants it in every convolution, the backbone's included:
  raise      raise inside the model's forward, as a buggy custom block would
  allocate   allocate and touch ``EFFNAS_INJECT_GIB`` GiB (default 1.5), as a candidate too big for memory would
"""

import os
import sys

import torch
from torch import nn

FAULT = os.environ.get("EFFNAS_INJECT")
_forward = nn.Conv2d.forward


def _faulty_forward(self: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    if self.kernel_size == (5, 5) or os.environ.get("EFFNAS_INJECT_ALL"):
        if FAULT == "raise":
            raise ValueError("injected fault: this candidate's convolution raised")
        if FAULT == "allocate":
            block = torch.ones(int(float(os.environ.get("EFFNAS_INJECT_GIB", "1.5")) * 2**30) // 4)
            x = x + block[0] * 0
    return _forward(self, x)


if FAULT:
    nn.Conv2d.forward = _faulty_forward

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from effnas.nas.cli.main import main

    sys.exit(main())

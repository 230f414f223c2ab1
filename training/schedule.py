"""Step-length schedule (paper, *Network optimisation*): stepped linear warm-up, then cosine.

The step length starts at 1e-4 and rises linearly, in increments every 10th step, to 1e-2 at
step 1000; then it follows a cosine annealing to 0 at the end of training (step 500,000).

The paper's text says "incremented by 1.0e-2 every 10th step", which would reach 1.0, not 1e-2,
at step 1000; we follow its stated end points (docs/training.md): 100 increments of
(1e-2 - 1e-4) / 100. Steps are counted from 0; the last step is ``total_steps - 1``.
"""

from __future__ import annotations

import math


def step_length(step: int, total_steps: int = 500_000, peak: float = 1e-2, start: float = 1e-4,
                warmup_steps: int = 1000, every: int = 10) -> float:
    """The learning rate at ``step`` (0-based)."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        increments = warmup_steps // every
        return start + (peak - start) * (step // every) / increments
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return 0.5 * peak * (1.0 + math.cos(math.pi * progress))

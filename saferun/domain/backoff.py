"""SafeRun's one backoff rule: exponential growth to a cap, with jitter so many retriers spread out.

Used by every retry in the code base: ``RetryPolicy`` (compensations, cleanup hooks, the HTTP clients, the
x402 platform client), the leased queues (``storage.leased``: platform deliveries) and the notification
dispatcher (which keeps half of the bound as a floor, so a receiver that is down is not hammered).
"""

from __future__ import annotations

import random
from collections.abc import Callable


def exponential_bound(attempt: int, initial: float, cap: float, multiplier: float = 2.0) -> float:
    """The longest wait after failed attempt ``attempt`` (1-based): ``initial * multiplier^(attempt-1)``,
    at most ``cap``."""
    return min(cap, initial * multiplier ** max(0, attempt - 1))


def full_jitter(
    attempt: int,
    initial: float,
    cap: float,
    multiplier: float = 2.0,
    rng: Callable[[], float] = random.random,
) -> float:
    """A wait drawn uniformly from ``[0, exponential_bound]`` ("full jitter")."""
    return rng() * exponential_bound(attempt, initial, cap, multiplier)

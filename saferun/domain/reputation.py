"""A supervisor's reputation in 0..1, from the ratings they received and the quality of their approvals.

The rule (see docs/decisions.md, "Marketplace reputation"): every rating ``r`` (1..5) counts as the
observation ``(r - 1) / 4`` and every recorded approval quality ``q`` (0..1) as the observation ``q``; the
reputation is their Bayesian average with a neutral prior of ``PRIOR_MEAN`` worth ``PRIOR_WEIGHT``
observations::

    reputation = (PRIOR_WEIGHT * PRIOR_MEAN + sum(observations)) / (PRIOR_WEIGHT + len(observations))

so a newcomer starts at 0.5, one 5-star rating cannot outrank a long record of good work, and the score
moves towards the observed average as evidence accumulates. Exact ``Fraction`` arithmetic, rounded once
to four decimals at the end, so the same history always gives the same number on every database.
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction

PRIOR_MEAN = Fraction(1, 2)
PRIOR_WEIGHT = 3
MIN_RATING = 1
MAX_RATING = 5


def rating_observation(rating: int) -> Fraction:
    return Fraction(rating - MIN_RATING, MAX_RATING - MIN_RATING)


def reputation(ratings: Iterable[int], qualities: Iterable[float]) -> float:
    observations = [rating_observation(r) for r in ratings]
    # a float quality is taken through its shortest repr, like amounts: 0.95 means 95/100
    observations += [Fraction(repr(float(q))) for q in qualities]
    total = PRIOR_WEIGHT * PRIOR_MEAN + sum(observations, Fraction(0))
    return round(float(total / (PRIOR_WEIGHT + len(observations))), 4)


def approval_quality(requests_opened: int, decided_in_person: int) -> float | None:
    """The approval-quality score SafeRun records for a supervisor when a workflow ends.

    The share of the workflow's approval requests the supervisor decided themselves, before the
    timeout policy had to decide for them: a supervisor who lets checkpoints expire is not supervising.
    None when the workflow never asked for a decision (nothing to judge, nothing recorded).
    """
    if requests_opened <= 0:
        return None
    return round(min(decided_in_person, requests_opened) / requests_opened, 4)

"""The projected training time left that each epoch's log line ends with."""

from __future__ import annotations

import pytest
from cellbench.train import remaining_time


@pytest.mark.parametrize(
    ("seconds", "epochs", "expected"),
    [
        ([120.0], 28, "54 min"),  # 27 epochs of 2 min
        ([100.0, 140.0], 58, "1 h 52 min"),  # the mean epoch (120 s) times 56
        ([3600.0], 3, "2 h 00 min"),
        ([10.0, 10.0], 4, "<1 min"),
        ([29.0], 2, "<1 min"),  # 29 s rounds to 0 minutes
        ([31.0], 2, "1 min"),
    ],
)
def test_mean_epoch_times_epochs_left(seconds: list[float], epochs: int, expected: str) -> None:
    history = [{"epoch": i + 1, "seconds": s} for i, s in enumerate(seconds)]
    assert remaining_time(history, epochs) == expected


def test_nothing_when_ended_or_not_started() -> None:
    assert remaining_time([{"seconds": 5.0}] * 3, 3) == ""
    assert remaining_time([{"seconds": 5.0}] * 4, 3) == ""  # stopped early, then ended
    assert remaining_time([], 3) == ""

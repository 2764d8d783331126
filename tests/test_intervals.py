"""95 % intervals over tasks, against values computed by hand, and the paired comparison of two policies."""

from __future__ import annotations

import math

import pytest

from conftest import episode_record
from rwml_lite.intervals import clustered_mean, paired_difference, sign_test, wilson
from rwml_lite.stages.eval import task_success, versus


def test_wilson_interval_of_10_and_5_wins_in_16_games():
    # by hand: centre (p + z^2/2n) / (1 + z^2/n), half-width z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n), z = 1.96
    assert wilson(10, 16) == pytest.approx((0.3864, 0.8152), abs=1e-4)
    assert wilson(5, 16) == pytest.approx((0.1416, 0.5560), abs=1e-4)
    assert wilson(0, 16) == pytest.approx((0.0, 0.1936), abs=1e-4)  # honest at 0/n, where mean +- sd says 0 +- 0
    assert wilson(16, 16) == pytest.approx((0.8064, 1.0), abs=1e-4)


def test_with_equal_clusters_the_clustered_interval_is_the_t_interval_of_cluster_means():
    # four tasks of two predictions each: task means 0.5, 1, 0, 0.5; sd 0.4082, t(0.975, 3) = 3.1824
    estimate = clustered_mean([[1, 0], [1, 1], [0, 0], [1, 0]])
    half = 3.1824 * 0.4082 / 2
    assert (estimate.mean, estimate.units) == (0.5, 4)
    assert (estimate.low, estimate.high) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-3)


def test_one_cluster_has_no_interval():
    estimate = clustered_mean([[1, 0, 1]])
    assert estimate.mean == pytest.approx(2 / 3) and math.isnan(estimate.low)
    assert estimate.as_dict()["low"] is None  # JSON holds it as null


def test_a_paired_difference_cancels_what_the_tasks_share():
    """Every task gains exactly one hit in two: the difference is +0.5 with no spread, though the rates
    themselves vary from task to task."""
    before = [[0, 0], [1, 0], [0, 0], [1, 0]]
    after = [[1, 0], [1, 1], [1, 0], [1, 1]]
    difference = paired_difference(after, before)
    assert difference.mean == 0.5 and difference.low == pytest.approx(0.5) and difference.high == pytest.approx(0.5)
    with pytest.raises(ValueError, match="same observations"):
        paired_difference([[1]], [[1, 0]])


def test_sign_test_counts_games_and_gives_the_exact_two_sided_p():
    # 10 of 16 won against 5 of 16, the five wins among the ten: 5 games better, none worse; p = 2 / 2^5
    test = sign_test([1.0] * 10 + [0.0] * 6, [1.0] * 5 + [0.0] * 11)
    assert test == {"better": 5, "worse": 0, "same": 11, "p": pytest.approx(0.0625)}
    assert sign_test([1.0, 0.0], [1.0, 0.0])["p"] == 1.0


def test_task_success_is_over_games_and_versus_pairs_the_same_games():
    """16 games x 1 run: the trained policy wins games 0-9, the base games 0-4."""

    def evaluated(wins: int) -> dict:
        episodes = [episode_record(f"test-{g}#0", [], split="test", won=g < wins) for g in range(16)]
        hits = {"test-0": {"t/0": [1.0, 0.0]}, "test-1": {"t/1": [float(wins > 5), 0.0]}}
        return {**task_success(episodes, runs=1, splits=["test"]), "wm_hits_by_task": hits}

    trained, base = evaluated(10), evaluated(5)
    success = trained["success"]["test"]
    assert (success["mean"], success["games"]) == (62.5, 16)
    assert (success["low"], success["high"]) == pytest.approx((38.64, 81.52), abs=1e-2)
    assert success["per_run"] == [62.5] and success["run_std"] == 0.0  # no spread over runs: one run, not certainty
    compared = versus(trained, base)
    assert compared["success"]["mean"] == pytest.approx(31.25)
    assert compared["success"]["low"] > 0  # 5 games better, none worse: beyond the interval over games
    assert compared["success"]["games"] == {"better": 5, "worse": 0, "same": 11, "p": pytest.approx(0.0625)}
    assert compared["wm_hit_rate"]["mean"] == pytest.approx(25.0)  # one hit more in four paired predictions
    assert compared["wm_hit_rate"]["units"] == 2

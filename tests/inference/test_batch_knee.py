"""The batch curve the batcher caps at: measured per group of batch sizes."""

from __future__ import annotations

from aidx.inference.batch_knee import BatchKnee, group_bounds


def feed(knee: BatchKnee, size: int, per_item_s: float, times: int = 3) -> None:
    for _ in range(times):
        knee.observe(size, per_item_s * size)


def test_groups_are_powers_of_two_up_to_the_maximum() -> None:
    assert group_bounds(32) == [1, 2, 4, 8, 16, 32]
    assert group_bounds(24) == [1, 2, 4, 8, 16, 24]
    assert group_bounds(1) == [1]


def test_nothing_measured_cuts_at_the_maximum() -> None:
    knee = BatchKnee(32)
    assert knee.knee() is None
    assert knee.limit() == 32


def test_a_group_needs_enough_samples_before_it_counts() -> None:
    knee = BatchKnee(32, min_samples=3)
    feed(knee, 1, 0.010)
    feed(knee, 32, 0.020, times=2)  # one batch short of counting
    assert knee.limit() == 32
    knee.observe(32, 0.020 * 32)
    assert knee.knee() == 1


def test_while_bigger_batches_are_cheaper_per_item_nothing_caps() -> None:
    knee = BatchKnee(32)
    feed(knee, 1, 0.010)
    feed(knee, 8, 0.004)
    assert knee.knee() is None  # the cheapest is the largest measured: keep growing
    assert knee.limit() == 32


def test_the_knee_is_the_smallest_group_within_tolerance_of_the_cheapest() -> None:
    # DenseNet-121 on 2 cores: flat from 4, dearer past 8 (ms per image)
    knee = BatchKnee(32, tolerance=0.03)
    for size, ms in ((1, 20.7), (4, 15.6), (8, 15.3), (32, 17.5)):
        feed(knee, size, ms / 1e3)
    assert knee.knee() == 4  # 15.6 is within 3% of 15.3
    knee_strict = BatchKnee(32, tolerance=0.0)
    for size, ms in ((1, 20.7), (4, 15.6), (8, 15.3), (32, 17.5)):
        feed(knee_strict, size, ms / 1e3)
    assert knee_strict.knee() == 8


def test_sizes_between_bounds_count_in_the_group_above() -> None:
    knee = BatchKnee(32)
    feed(knee, 5, 0.010)  # group 8
    feed(knee, 20, 0.020)  # group 32
    assert knee.curve() == {8: 0.010, 32: 0.020}
    assert knee.knee() == 8


def test_every_nth_batch_tries_the_group_above_or_below_the_cap_in_turn() -> None:
    knee = BatchKnee(32, explore_every=4)
    feed(knee, 2, 0.010)
    feed(knee, 32, 0.020)
    limits = []
    for _ in range(16):
        limits.append(knee.limit())
        knee.observe(2, 0.020)
    assert knee.knee() == 2
    assert limits.count(2) == 12
    assert sorted(n for n in limits if n != 2) == [1, 1, 4, 4]


def test_a_load_that_always_fills_the_maximum_still_measures_the_group_below() -> None:
    knee = BatchKnee(32, explore_every=4)
    feed(knee, 32, 0.020)
    limits = [knee.limit()]
    for _ in range(15):
        knee.observe(limits[-1], 0.020 * limits[-1] if limits[-1] == 32 else 0.010 * 16)
        limits.append(knee.limit())
    assert 16 in limits
    assert knee.knee() == 16  # measured cheaper per item: the cap from now on


def test_the_knee_moves_up_when_the_group_above_measures_cheaper() -> None:
    knee = BatchKnee(32)
    feed(knee, 2, 0.010)
    feed(knee, 32, 0.020)
    assert knee.knee() == 2
    feed(knee, 4, 0.006, times=20)  # what exploring found
    assert knee.knee() == 4


def test_the_mean_follows_a_change_of_load() -> None:
    knee = BatchKnee(32, smoothing=0.5)
    feed(knee, 8, 0.010)
    feed(knee, 32, 0.008)
    assert knee.knee() is None
    feed(knee, 32, 0.020, times=6)  # the machine got busier: big batches now dearer
    assert knee.knee() == 8


def test_sizes_outside_one_to_the_maximum_are_ignored() -> None:
    knee = BatchKnee(8)
    knee.observe(0, 1.0)
    knee.observe(9, 1.0)
    assert knee.batches_seen == 0 and knee.curve() == {}

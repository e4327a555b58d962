"""The drift probe's arithmetic (its sampling is a loop around ``time``)."""

from bench.drift import window_medians


def test_each_five_second_window_gets_its_median_in_time_order():
    samples = [(0.1, 1.0), (2.0, 3.0), (4.9, 2.0),  # window 0: median 2.0
               (5.0, 1.5),                          # window 1
               (12.0, 4.0), (14.0, 6.0)]            # window 2 (window of 10-15 s)
    assert window_medians(samples) == [2.0, 1.5, 5.0]


def test_no_samples_no_windows():
    assert window_medians([]) == []

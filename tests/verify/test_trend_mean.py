"""The trend's window mean is kept per read (an exact scaled integer sum), not summed over the window
at every read, and is bit for bit the mean math.fsum gives over the window, whatever the grades."""

import collections
import math

from hypothesis import given, settings, strategies as st

from serialine.host.trend import Series

_grade = st.one_of(st.sampled_from([3.5, 2.5, 1.5, 0.5, 0.0, 3.27, 1.49, 0.01]),
                   st.floats(min_value=0.0, max_value=4.0, allow_nan=False, allow_subnormal=True))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=2, max_value=9), st.lists(_grade, min_size=1, max_size=60))
def test_the_running_mean_is_the_windows_fsum_mean(window, grades):
    s = Series(collections.deque(maxlen=window))
    for g in grades:
        s.push(g)
        assert s.mean == math.fsum(s.values) / len(s.values)

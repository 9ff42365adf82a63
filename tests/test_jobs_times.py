"""The job store's timestamps: rq's format written, read back fast and exactly as rq reads it."""

import datetime as dt

import pytest
from rq.utils import utcformat, utcparse

from worker.jobbase import _fmt, _parse_time


@pytest.mark.parametrize(
    "t",
    [
        dt.datetime(2026, 12, 2, 6, 50, 7, 123456, tzinfo=dt.UTC),
        dt.datetime(2026, 12, 2, 6, 50, 7, 0, tzinfo=dt.UTC),  # .000000: still six digits
        dt.datetime(1999, 1, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
    ],
)
def test_times_round_trip_as_rq_reads_them(t):
    s = _fmt(t)
    assert s == utcformat(t)
    back = _parse_time(s.encode())
    assert back == utcparse(s) == t and back is not None and back.tzinfo == dt.UTC


@pytest.mark.parametrize(
    "s",
    ["2026-12-02T06:50:07Z", "2026-12-02T06:50:07.1Z", "2026-12-02T06:50:07.123Z", "2026-12-02T06:50:07.123456Z"],
)
def test_other_forms_rq_reads_are_read_alike(s):
    assert _parse_time(s.encode()) == utcparse(s)


@pytest.mark.parametrize("s", ["2026-12-02 06:50:07.123456Z", "2026-12-02T06:50:07,123456Z", "2026-13-02T06:50:07.1Z"])
def test_what_rq_refuses_is_refused(s):
    with pytest.raises(ValueError):
        utcparse(s)
    with pytest.raises(ValueError):
        _parse_time(s.encode())


def test_nothing_is_none():
    assert _parse_time(None) is None and _parse_time(b"") is None

"""The day in an issue id (``WH-yyyymmdd-nnnn``): ``shared.store.day_of``."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.store import day_of

ZONES = ["Asia/Shanghai", "UTC", "America/St_Johns", "Pacific/Kiritimati", "Pacific/Pago_Pago",
         "Europe/London"]


@settings(max_examples=1000, deadline=None)
@given(st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.just(UTC)), st.sampled_from(ZONES))
def test_the_day_is_strftimes_in_the_display_time_zone(moment, tz):
    from zoneinfo import ZoneInfo

    assert day_of(moment, tz) == moment.astimezone(ZoneInfo(tz)).strftime("%Y%m%d")


def test_the_day_changes_at_midnight_in_the_display_time_zone():
    assert day_of(datetime(2026, 11, 21, 15, 59, 59, tzinfo=UTC), "Asia/Shanghai") == "20261121"
    assert day_of(datetime(2026, 11, 21, 16, 0, 0, tzinfo=UTC), "Asia/Shanghai") == "20261122"

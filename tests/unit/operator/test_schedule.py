"""Sleep schedules: time-travel tests across weekends, midnight, holidays and daylight-saving changes."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from gpt_operator.schedule import evaluate, parse_wake_until
from gpt_operator.spec import OffWindow, ScheduleSpec, default_off_windows

pytestmark = pytest.mark.unit

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def berlin(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)


def default_schedule(tz: str = "Europe/Berlin", holidays: list[date] | None = None) -> ScheduleSpec:
    return ScheduleSpec(time_zone=tz, off_windows=default_off_windows(), holidays=holidays or [])


@pytest.mark.parametrize(
    ("moment", "asleep"),
    [
        (berlin(2026, 3, 4, 12, 0), False),  # Wednesday noon
        (berlin(2026, 3, 4, 19, 59), False),
        (berlin(2026, 3, 4, 20, 0), True),  # sleeps at 20:00
        (berlin(2026, 3, 4, 23, 59), True),
        (berlin(2026, 3, 5, 0, 0), True),  # across midnight
        (berlin(2026, 3, 5, 7, 59), True),
        (berlin(2026, 3, 5, 8, 0), False),  # wakes at 08:00
        (berlin(2026, 3, 6, 21, 0), True),  # Friday night
        (berlin(2026, 3, 7, 12, 0), True),  # Saturday noon
        (berlin(2026, 3, 8, 12, 0), True),  # Sunday noon
        (berlin(2026, 3, 9, 7, 59), True),  # Monday before work
        (berlin(2026, 3, 9, 8, 0), False),
    ],
)
def test_default_dev_schedule(moment: datetime, asleep: bool) -> None:
    assert evaluate(default_schedule(), moment).asleep is asleep


def test_next_transition_from_friday_evening_is_monday_morning() -> None:
    state = evaluate(default_schedule(), berlin(2026, 3, 6, 20, 30))
    assert state.asleep and state.reason == "OffWindow"
    assert state.next_transition == berlin(2026, 3, 9, 8, 0)
    awake = evaluate(default_schedule(), berlin(2026, 3, 9, 9, 0))
    assert awake.next_transition == berlin(2026, 3, 9, 20, 0)


def test_weekend_across_spring_forward_is_an_hour_shorter_in_utc() -> None:
    # Europe/Berlin moves to summer time on Sunday 2026-03-29.
    friday = evaluate(default_schedule(), berlin(2026, 3, 27, 20, 0))
    assert friday.asleep
    assert friday.next_transition == datetime(2026, 3, 30, 6, 0, tzinfo=UTC)  # 08:00 CEST
    assert friday.next_transition - berlin(2026, 3, 27, 20, 0) == timedelta(hours=59)
    assert evaluate(default_schedule(), datetime(2026, 3, 30, 5, 59, tzinfo=UTC)).asleep
    assert not evaluate(default_schedule(), datetime(2026, 3, 30, 6, 0, tzinfo=UTC)).asleep


def test_weekend_across_fall_back_is_an_hour_longer_in_utc() -> None:
    # Europe/Berlin returns to winter time on Sunday 2026-10-25.
    friday = evaluate(default_schedule(), berlin(2026, 10, 23, 20, 0))
    assert friday.next_transition == datetime(2026, 10, 26, 7, 0, tzinfo=UTC)  # 08:00 CET
    assert friday.next_transition - berlin(2026, 10, 23, 20, 0) == timedelta(hours=61)
    # The repeated hour 02:00-03:00 on Sunday is asleep both times.
    assert evaluate(default_schedule(), datetime(2026, 10, 25, 0, 30, tzinfo=UTC)).asleep
    assert evaluate(default_schedule(), datetime(2026, 10, 25, 1, 30, tzinfo=UTC)).asleep


def test_two_weeks_of_time_travel_match_the_wall_clock_rule_across_dst() -> None:
    """Every 15 minutes for two weeks around the spring change: asleep iff weekend or outside 08-20."""
    schedule = default_schedule()
    moment = datetime(2026, 3, 21, 0, 0, tzinfo=UTC)
    while moment < datetime(2026, 4, 4, tzinfo=UTC):
        local = moment.astimezone(BERLIN)
        expected = local.weekday() >= 5 or local.hour >= 20 or local.hour < 8
        assert evaluate(schedule, moment).asleep is expected, local.isoformat()
        moment += timedelta(minutes=15)


def test_window_starting_in_the_spring_forward_gap() -> None:
    # 02:30 does not exist in New York on 2026-03-08; it is read as 03:30 EDT.
    schedule = ScheduleSpec(
        time_zone="America/New_York", off_windows=[OffWindow(days=["Sun"], start="02:30", end="05:00")]
    )
    assert not evaluate(schedule, datetime(2026, 3, 8, 3, 15, tzinfo=NEW_YORK)).asleep
    assert evaluate(schedule, datetime(2026, 3, 8, 3, 30, tzinfo=NEW_YORK)).asleep
    assert not evaluate(schedule, datetime(2026, 3, 8, 5, 0, tzinfo=NEW_YORK)).asleep


def test_holiday_sleeps_all_day_and_merges_with_the_nights_around_it() -> None:
    schedule = default_schedule(holidays=[date(2026, 5, 1)])  # a Friday
    state = evaluate(schedule, berlin(2026, 5, 1, 12, 0))
    assert state.asleep
    # Thursday 20:00 -> holiday -> Friday night -> weekend -> Monday 08:00, one sleep.
    assert state.next_transition == berlin(2026, 5, 4, 8, 0)
    assert evaluate(schedule, berlin(2026, 4, 30, 21, 0)).next_transition == berlin(2026, 5, 4, 8, 0)


def test_holiday_only_schedule() -> None:
    schedule = ScheduleSpec(time_zone="UTC", holidays=[date(2026, 12, 25)])
    assert evaluate(schedule, datetime(2026, 12, 25, 10, tzinfo=UTC)).reason == "Holiday"
    state = evaluate(schedule, datetime(2026, 12, 24, 10, tzinfo=UTC))
    assert not state.asleep
    assert state.next_transition == datetime(2026, 12, 25, tzinfo=UTC)


def test_wake_until_annotation_wakes_early_until_its_time() -> None:
    saturday = berlin(2026, 3, 7, 10, 0)
    wake_until = berlin(2026, 3, 7, 14, 0)
    state = evaluate(default_schedule(), saturday, wake_until=wake_until)
    assert not state.asleep and state.reason == "WokenByAnnotation"
    assert state.next_transition == wake_until
    assert evaluate(default_schedule(), berlin(2026, 3, 7, 14, 0), wake_until=wake_until).asleep


def test_wake_until_past_the_window_end_stops_at_the_window_end() -> None:
    state = evaluate(default_schedule(), berlin(2026, 3, 9, 7, 0), wake_until=berlin(2026, 3, 9, 12, 0))
    assert not state.asleep
    assert state.next_transition == berlin(2026, 3, 9, 8, 0)


def test_suspend_sleeps_regardless_of_the_clock_and_wake_annotation() -> None:
    state = evaluate(None, berlin(2026, 3, 4, 12, 0), suspend=True, wake_until=berlin(2026, 3, 5, 0, 0))
    assert state.asleep and state.reason == "Suspended" and state.next_transition is None


def test_no_schedule_is_always_awake() -> None:
    state = evaluate(None, berlin(2026, 3, 7, 3, 0))
    assert not state.asleep and state.next_transition is None


def test_window_with_end_day_spanning_a_weekend() -> None:
    schedule = ScheduleSpec(
        time_zone="UTC", off_windows=[OffWindow(days=["Sat"], start="00:00", end="00:00", end_day="Mon")]
    )
    assert evaluate(schedule, datetime(2026, 3, 8, 23, 59, tzinfo=UTC)).asleep  # Sunday night
    assert not evaluate(schedule, datetime(2026, 3, 9, 0, 0, tzinfo=UTC)).asleep  # Monday 00:00


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(None, datetime(2026, 3, 4, 12, 0))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-07T14:00:00Z", datetime(2026, 3, 7, 14, tzinfo=UTC)),
        ("2026-03-07T15:00:00+01:00", datetime(2026, 3, 7, 14, tzinfo=UTC)),
        ("2026-03-07T14:00:00", None),  # no offset: ambiguous, ignored
        ("tomorrow", None),
        (None, None),
    ],
)
def test_parse_wake_until(value: str | None, expected: datetime | None) -> None:
    assert parse_wake_until(value) == expected

"""Awake or asleep, from the schedule, the annotations, the last request and the clock (pure; `now` is passed in).

Windows are laid out on local calendar days in the schedule's time zone and compared as aware datetimes,
so a 20:00 -> 08:00 window stays 20:00 -> 08:00 on the wall clock across daylight-saving changes (the
night is an hour shorter or longer in UTC). A time that does not exist on a spring-forward day is read
with the offset before the change, as `zoneinfo` does (02:30 becomes 03:30).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from gpt_operator.spec import WEEKDAYS, ScheduleSpec

# How far to look for the next transition; windows repeat weekly, holidays are dates.
_LOOKBACK_DAYS = 8
_LOOKAHEAD_DAYS = 15


@dataclass(frozen=True)
class SleepState:
    asleep: bool
    reason: str  # Awake | OffWindow | Holiday | Suspended | WokenByAnnotation | NoSchedule | Idle
    message: str
    next_transition: datetime | None  # when the state changes next by the clock (UTC), if ever


def parse_wake_until(value: str | None) -> datetime | None:
    """The wake-until annotation (RFC 3339); None when absent or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def _local(day: date, hhmm: str, tz: ZoneInfo) -> datetime:
    hours, minutes = (int(p) for p in hhmm.split(":"))
    return datetime.combine(day, time(hours, minutes), tzinfo=tz)


def off_intervals(schedule: ScheduleSpec, around: datetime) -> list[tuple[datetime, datetime, str]]:
    """Merged (start, end, reason) asleep intervals near `around`, in UTC, sorted.

    UTC throughout: Python compares two datetimes of the same zone by wall clock, which is wrong in the
    repeated hour of a fall-back night."""
    tz = schedule.tz
    today = around.astimezone(tz).date()
    raw: list[tuple[datetime, datetime, str]] = []
    for offset in range(-_LOOKBACK_DAYS, _LOOKAHEAD_DAYS + 1):
        day = today + timedelta(days=offset)
        weekday = WEEKDAYS[day.weekday()]
        for window in schedule.off_windows:
            if weekday not in window.days:
                continue
            start = _local(day, window.start, tz)
            if window.end_day is not None:
                ahead = (WEEKDAYS.index(window.end_day) - day.weekday()) % 7
                end_date = day + timedelta(days=ahead)
                end = _local(end_date, window.end, tz)
                if end <= start:
                    end = _local(end_date + timedelta(days=7), window.end, tz)
            else:
                end = _local(day, window.end, tz)
                if window.end <= window.start:
                    end = _local(day + timedelta(days=1), window.end, tz)
            raw.append((_utc(start), _utc(end), "OffWindow"))
        if day in schedule.holidays:
            midnight, next_midnight = _local(day, "00:00", tz), _local(day + timedelta(days=1), "00:00", tz)
            raw.append((_utc(midnight), _utc(next_midnight), "Holiday"))
    raw.sort(key=lambda iv: iv[0])
    merged: list[tuple[datetime, datetime, str]] = []
    for start, end, reason in raw:
        if merged and start <= merged[-1][1]:
            prev_start, prev_end, prev_reason = merged[-1]
            merged[-1] = (prev_start, max(prev_end, end), prev_reason)
        else:
            merged.append((start, end, reason))
    return merged


def evaluate(
    schedule: ScheduleSpec | None,
    now: datetime,
    *,
    suspend: bool = False,
    wake_until: datetime | None = None,
    last_request: datetime | None = None,
) -> SleepState:
    """Whether the deployment sleeps at `now` (aware), and when that changes next by the clock.

    Order: suspend, then the off windows and holidays (the wake-until annotation wakes them early), then
    `schedule.idle`: asleep once `sleepAfterSeconds` have passed since `last_request` (the wake-until annotation
    wakes that too); a request wakes it, which the caller sees as a newer `last_request`."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if suspend:
        return SleepState(True, "Suspended", "spec.suspend is true", None)
    state = _by_windows(schedule, now, wake_until)
    idle = schedule.idle if schedule is not None else None
    if state.asleep or idle is None or last_request is None:
        return state
    idle_at = _utc(last_request + timedelta(seconds=idle.sleep_after_seconds))
    woken = wake_until is not None and now < wake_until
    if now >= idle_at and not woken:
        message = f"asleep: no request since {_utc(last_request).isoformat()}; the next request wakes it"
        # no wake by the clock: a request wakes it (the next off window only renames the sleep)
        return SleepState(True, "Idle", message, None)
    # the next look: when the idle time is up, or (woken past it) when the annotation ends
    idle_check = idle_at if now < idle_at or wake_until is None else _utc(wake_until)
    later = [t for t in (state.next_transition, idle_check) if t is not None]
    return replace(state, next_transition=min(later))


def _by_windows(schedule: ScheduleSpec | None, now: datetime, wake_until: datetime | None) -> SleepState:
    if schedule is None or (not schedule.off_windows and not schedule.holidays):
        return SleepState(False, "NoSchedule", "no sleep schedule", None)
    intervals = off_intervals(schedule, now)
    current = next(((s, e, r) for s, e, r in intervals if s <= now < e), None)
    upcoming = next((s for s, _, _ in intervals if s > now), None)
    if current is not None:
        _, end, reason = current
        end_local = end.astimezone(schedule.tz)
        if wake_until is not None and now < wake_until:
            return SleepState(
                False,
                "WokenByAnnotation",
                f"woken early until {wake_until.isoformat()}",
                _utc(min(wake_until, end)),
            )
        what = "holiday" if reason == "Holiday" else "off window"
        return SleepState(True, reason, f"asleep ({what}) until {end_local.isoformat()}", _utc(end))
    return SleepState(False, "Awake", "inside working hours", _utc(upcoming) if upcoming else None)


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(ZoneInfo("UTC"))

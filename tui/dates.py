"""Times as lists show them: short, local, and relative to now where that reads better."""

from __future__ import annotations

import datetime
import time


def when(stamp: float, now: float | None = None) -> str:
    """``today 14:02``, ``yesterday 09:13``, ``Tue 14:02`` within the week, ``5 Mar 14:02``
    within the year, else ``5 Mar 2024``."""
    now = time.time() if now is None else now
    at, today = time.localtime(stamp), time.localtime(now)
    clock = time.strftime("%H:%M", at)
    days = _day_number(today) - _day_number(at)
    if days == 0:
        return f"today {clock}"
    if days == 1:
        return f"yesterday {clock}"
    if 1 < days < 7:
        return f"{time.strftime('%a', at)} {clock}"
    day = f"{at.tm_mday} {time.strftime('%b', at)}"
    return f"{day} {clock}" if at.tm_year == today.tm_year else f"{day} {at.tm_year}"


def same_day(a: float, b: float) -> bool:
    return time.localtime(a)[:3] == time.localtime(b)[:3]


def _day_number(moment: time.struct_time) -> int:
    """The calendar day of ``moment``, counted from year 1."""
    return datetime.date(moment.tm_year, moment.tm_mon, moment.tm_mday).toordinal()

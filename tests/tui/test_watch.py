"""Watching the files: a save refreshes the pack and prefills from the first file that changed;
new and deleted files are seen; watching can be off, turned on and off, and its prefill
stopped."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from textual.pilot import Pilot
from tui_helpers import Engines, MakeApp, notifications, run, settle, submit, tree_lines, wait_for

from tui.app import RepoctxApp
from tui.status_line import StatusLine
from tui.watch import ChangeDetector, FolderNames, WatchTimes, watch_wanted

FAST = WatchTimes(interval=0.05, quiet=0.2)
REFRESHED = re.compile(r"(\d+) files? changed; pack refreshed, ([\d,]+) tokens evaluated")


def state(app: RepoctxApp) -> str:
    return app.query_one(StatusLine).activity.state


async def refreshed(pilot: Pilot[Any]) -> re.Match[str]:
    """Wait for the status line to say that the pack was refreshed; what it said."""
    app = pilot.app
    assert isinstance(app, RepoctxApp)
    await wait_for(pilot, lambda: REFRESHED.fullmatch(state(app)) is not None, timeout=15)
    found = REFRESHED.fullmatch(state(app))
    assert found is not None
    return found


def test_a_saved_file_refreshes_the_pack_and_only_what_follows_it_is_prefilled(
    shop: Path, make_app: MakeApp
) -> None:
    engines = Engines()
    app = make_app([shop], engines=engines, offer_resume=True, watch=FAST)

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            await wait_for(pilot, lambda: bool(engines.made) and bool(engines.made[0]._live))
            warmed = len(engines.made[0]._live)
            assert "  tests/  43" in tree_lines(app)
            test = shop / "tests/test_cart.py"
            test.write_text(test.read_text() + "\n\ndef test_one():\n    assert True\n")
            await wait_for(pilot, lambda: "    test_cart.py  43" not in tree_lines(app), 15)
            found = await refreshed(pilot)
            assert found[1] == "1"
            grown = [line for line in tree_lines(app) if line.startswith("    test_cart.py  ")]
            assert grown and int(grown[0].split()[-1]) > 43
            evaluated = int(found[2].replace(",", ""))
            assert 0 < evaluated < 100 < warmed  # the file at the end, not the whole pack
            assert len(engines.made) == 1 and len(engines.made[0]._live) > warmed

    run(scenario())


def test_new_and_deleted_files_are_seen(shop: Path, make_app: MakeApp) -> None:
    app = make_app([shop], watch=FAST)

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            (shop / "src/shop/tax.py").write_text("RATE = 20\n", encoding="utf-8")
            await wait_for(pilot, lambda: any("tax.py" in line for line in tree_lines(app)), 15)
            (shop / "README.md").unlink()
            await wait_for(pilot, lambda: not any("README" in line for line in tree_lines(app)))
            await settle(pilot)
            assert state(app).startswith("1 file changed; pack refreshed")

    run(scenario())


def test_watching_is_off_until_turned_on_and_can_be_turned_off(
    shop: Path, make_app: MakeApp
) -> None:
    app = make_app([shop])
    money = shop / "src/shop/money.py"

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            money.write_text(money.read_text() + "\n\nZERO = Money(0)\n", encoding="utf-8")
            await pilot.pause(1.0)
            await settle(pilot)
            assert "      money.py  44" in tree_lines(app)
            app.watcher.times = FAST
            await submit(pilot, "/watch")  # the save made while not watching is seen
            assert "watching the files" in notifications(app)[-1]
            assert (await refreshed(pilot))[1] == "1"
            assert "      money.py  44" not in tree_lines(app)
            await submit(pilot, "/watch")
            assert "not watching the files" in notifications(app)[-1]
            assert not app.watcher.running

    run(scenario())


def test_escape_stops_the_prefill_of_a_refresh(
    make_repo: Any, make_app: MakeApp, shop: Path
) -> None:
    big = "".join(
        f"def step_{i}(value: int) -> int:\n    return value + {i}\n\n" for i in range(150)
    )
    repo = make_repo({"big.py": big, "README.md": "# big\n"}, name="big")
    app = make_app([repo], engines=Engines(prefill_s=0.4), offer_resume=True, watch=FAST)

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            assert not app.refreshing
            (repo / "README.md").write_text("# big, edited\n", encoding="utf-8")
            await wait_for(pilot, lambda: state(app).startswith("prefilling"), timeout=15)
            assert app.refreshing
            await pilot.press("escape")
            await settle(pilot)
            assert state(app) == (
                "1 file changed; prefill stopped: the next question evaluates the rest"
            )
            assert not app.refreshing

    run(scenario())


def test_the_detector_reports_changes_once_they_are_quiet(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    detector = ChangeDetector(quiet=1.0)
    assert detector.look({a: 1, b: 1}, now=0.0) == []
    assert detector.look({a: 2, b: 1}, now=2.0) == [] and detector.pending
    assert detector.look({a: 3, b: 1}, now=2.5) == []  # still being written
    assert detector.look({a: 3, b: 2}, now=3.0) == []
    assert detector.look({a: 3, b: 2}, now=4.0) == [a, b] and not detector.pending
    assert detector.look({a: 3, b: 2, tmp_path / "new": 1}, now=9.0) == []  # a new pack's file


def test_a_file_seen_first_counts_as_changed_when_saved_after_its_scan_began(
    tmp_path: Path,
) -> None:
    old, new = tmp_path / "old", tmp_path / "new"
    detector = ChangeDetector(quiet=0.0)
    signatures = {old: (1_000, 10, 1), new: (2_000, 10, 2), tmp_path: frozenset({"old"})}
    assert detector.look(signatures, now=0.0, scanned_ns=1_500) == [new]
    assert detector.look(signatures, now=1.0, scanned_ns=1_500) == []


def test_folders_change_with_the_names_in_them_not_hidden_ones(tmp_path: Path) -> None:
    names = FolderNames()
    before = names.signature(tmp_path)
    (tmp_path / ".app.py.swp").write_text("x")
    (tmp_path / "notes~").write_text("x")
    assert names.signature(tmp_path) == before
    (tmp_path / "app.py").write_text("x")
    assert names.signature(tmp_path) != before
    assert names.signature(tmp_path / "gone") is None


def test_watching_is_on_unless_the_flag_or_the_environment_says_no(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("REPOCTX_WATCH", raising=False)
    flags: dict[str, Any] = {"budget": 100, "watch": False}
    assert not watch_wanted(flags) and flags == {"budget": 100}
    assert watch_wanted({}) and watch_wanted({"watch": None})
    monkeypatch.setenv("REPOCTX_WATCH", "off")
    assert not watch_wanted({})
    assert watch_wanted({"watch": True})

"""Leaving a file out of the pack keeps the order of the rest, so the prefill starts again only
where the file was. The files that imported it are the exception: they were held back behind
it and go to where their own age puts them, which can be earlier; the user is told what that
costs before the prefill starts.

The repository has history: notes.md, money.py, models.py and report.py are oldest, tax.py was
changed later, cart.py last. The pack order is notes, money, models (imports money), tax,
cart (imports models and money), report (imports cart)."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from repo_helpers import MakeRepo
from tui_helpers import Engines, MakeApp, notifications, run, settle, submit, wait_for

from repoctx.config import load_settings
from repoctx.pack.pipeline import PackResult, build_pack
from tui.app import RepoctxApp
from tui.status_line import StatusLine

CART = (
    "from shop.models import Item\nfrom shop.money import Money\n\n\n"
    "def total(items: list[Item]) -> Money:\n    return Money(sum(i.price.cents for i in items))\n"
)
FILES = {
    "notes.md": "# Notes\n\nHow the shop adds up money.\n",
    "shop/money.py": "class Money:\n    def __init__(self, cents: int) -> None:\n"
    "        self.cents = cents\n",
    "shop/models.py": "from shop.money import Money\n\n\nclass Item:\n    price: Money\n",
    "shop/cart.py": CART,
    "shop/report.py": "from shop.cart import total\n\n\ndef report(items):\n"
    "    return f'{total(items).cents} cents'\n",
    "shop/tax.py": "RATE = 20\n",
}
ORDER = [
    "notes.md",
    "shop/money.py",
    "shop/models.py",
    "shop/tax.py",
    "shop/cart.py",
    "shop/report.py",
]
EVALUATED = re.compile(r"(?:left out|dropped) (\S+); pack refreshed, ([\d,]+) tokens evaluated")


@pytest.fixture
def proj(make_repo: MakeRepo) -> Path:
    return make_repo(
        FILES,
        name="proj",
        when=1_600_000_000,
        commits=[
            ({"shop/tax.py": "RATE = 21\n"}, 1_600_100_000),
            ({"shop/cart.py": CART + "\n\nEMPTY = Money(0)\n"}, 1_600_200_000),
        ],
    )


def packed(result: PackResult | None) -> list[str]:
    assert result is not None
    return [s.file.path for s in result.pack.segments]


def tokens_from(result: PackResult, index: int) -> int:
    """The tokens of the pack from its ``index``-th file to its end."""
    return sum(s.tokens for s in result.pack.segments[index:]) + result.pack.footer_tokens


def evaluated_after(app: RepoctxApp) -> tuple[str, int]:
    """What the status line says was left out, and the tokens the prefill evaluated."""
    status = app.query_one(StatusLine).activity
    found = EVALUATED.fullmatch(status.state)
    assert found is not None, status.state
    return found[1], int(found[2].replace(",", ""))


def test_leaving_out_a_file_keeps_the_order_of_the_rest_and_the_prefill_before_it(
    proj: Path, make_app: MakeApp
) -> None:
    engines = Engines()
    app = make_app([proj], engines=engines, offer_resume=True)

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            before = app.session.result
            assert packed(before) == ORDER
            await submit(pilot, "/exclude /shop/tax.py")
            await settle(pilot)
            after = app.session.result
            assert after is not None
            assert packed(after) == [p for p in ORDER if p != "shop/tax.py"]
            shown, evaluated = evaluated_after(app)
            assert shown == "/shop/tax.py"
            # from where tax.py was: cart.py, report.py and the end of the pack (give or take
            # the tokens that the file tags share, and the chat markup after the pack)
            assert evaluated == pytest.approx(tokens_from(after, 3), abs=10)
            assert evaluated < tokens_from(after, 2) - 20
            assert not [n for n in notifications(app) if "will be evaluated again" in n]
            assert len(engines.made) == 1

    run(scenario())


def test_files_held_back_by_the_file_left_out_move_and_the_user_is_told_first(
    proj: Path, make_app: MakeApp
) -> None:
    app = make_app([proj], engines=Engines(prefill_s=0.3), offer_resume=True)

    async def scenario() -> None:
        async with app.run_test() as pilot:
            await settle(pilot)
            await submit(pilot, "/drop shop/cart.py")
            told = re.compile(r"the pack order changes \(1 file moves\): ([\d,]+) tokens will")
            await wait_for(pilot, lambda: any(told.match(n) for n in notifications(app)))
            assert app.refreshing  # told before the prefill is done
            await settle(pilot)
            # report.py no longer waits for cart.py: as old as notes.md, it comes before tax.py
            after = app.session.result
            assert after is not None
            assert packed(after) == [
                "notes.md",
                "shop/money.py",
                "shop/models.py",
                "shop/report.py",
                "shop/tax.py",
            ]
            notice = next(m for n in notifications(app) if (m := told.match(n)))
            _, evaluated = evaluated_after(app)
            assert int(notice[1].replace(",", "")) == pytest.approx(evaluated, abs=10)
            # from where report.py moved to, before where cart.py was
            assert evaluated == pytest.approx(tokens_from(after, 3), abs=10)

    run(scenario())


def test_only_the_files_that_import_the_file_left_out_can_move(proj: Path) -> None:
    """Every file of the pack in turn: the files that do not import it, directly or through
    others, keep their order."""
    settings = load_settings([proj], {})
    full = build_pack([proj], settings)
    users = full.graph.dependents()
    moved_somewhere = False
    for key in full.ordering.order:
        importers, todo = set(), [key]
        while todo:
            for user in users.get(todo.pop(), ()):
                if user not in importers:
                    importers.add(user)
                    todo.append(user)
        path = key.partition("/")[2]
        without = build_pack([proj], dataclasses.replace(settings, exclude=(f"/{path}",)))
        rest = [k for k in full.ordering.order if k != key]
        assert [k for k in without.ordering.order if k not in importers] == [
            k for k in rest if k not in importers
        ], key
        moved_somewhere |= list(without.ordering.order) != rest
    assert moved_somewhere  # the repository has a case where importers move

"""How long placing a prompt takes in Python: the shared prefix of the prompt and each slot's
tokens (``common_prefix``, several calls a question), at long contexts, beside the earlier
whole-range halving (``halving_prefix``). The prompt arrives as new int objects, as over the
resident engine's socket, so list comparison cannot short-cut on identity.

usage: .venv/bin/python benchmarks/prefix-match.py
"""

from __future__ import annotations

import array
import random
import statistics
import time
from collections.abc import Callable

from repoctx.engine.slots import Slots
from repoctx.model.prompt import common_prefix, halving_prefix

LENGTHS = (32_768, 131_072, 262_144, 1_048_576)
RUNS = 5


def median_ms(call: Callable[..., object], *args: object) -> float:
    times = []
    for _ in range(RUNS):
        began = time.perf_counter()
        call(*args)
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000


def main() -> None:
    rng = random.Random(7)
    print(f"{'tokens':>10} {'halving ms':>11} {'common_prefix ms':>17} {'speed-up':>9} "
          f"{'Slots.best, 2 slots ms':>23}")  # fmt: skip
    for length in LENGTHS:
        held = [rng.randrange(256, 128_000) for _ in range(length)]
        prompt = array.array("i", held + [5] * 48).tolist()  # new objects, as from the socket
        assert halving_prefix(held, prompt) == common_prefix(held, prompt) == length
        slots = Slots(4)
        slots.all[0].tokens = held + [9] * 8  # a conversation: the pack and an answer
        slots.all[1].tokens = list(held)  # its spare
        before = median_ms(halving_prefix, held, prompt)
        after = median_ms(common_prefix, held, prompt)
        best = median_ms(slots.best, prompt)
        print(f"{length:>10,} {before:>11.2f} {after:>17.2f} {before / after:>8.1f}x {best:>23.2f}")


if __name__ == "__main__":
    main()

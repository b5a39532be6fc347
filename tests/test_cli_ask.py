"""`repoctx ask` as a user runs it: the question as an argument or on stdin, the answer alone on
stdout, events as JSON lines, exit codes, and Ctrl-C that stops cleanly and keeps a checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import pytest
from repo_helpers import LLAMA3_VOCAB, MakeRepo, stop_resident_engine

from repoctx.cli.ask import split_question
from repoctx.errors import UsageError
from repoctx.kv.store import KVStore
from repoctx.model import synth

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 120
SCRIPTED = "This is a scripted answer."
FILES = {
    "shop/cart.py": "from shop.prices import price\n\n\ndef total(items):\n"
    "    return sum(price(item) for item in items)\n",
    "shop/prices.py": 'PRICES = {"apple": 3, "pear": 4}\n\n\ndef price(item):\n'
    "    return PRICES[item]\n",
}


def ask(
    *args: str,
    stdin: str | None = None,
    env: Mapping[str, str] | None = None,
    engine: str | None = "fake",
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **(env or {})}
    environment.pop("REPOCTX_ENGINE", None)
    if engine:
        environment["REPOCTX_ENGINE"] = engine
    return subprocess.run(
        [sys.executable, "-m", "repoctx", "ask", *args],
        cwd=ROOT, env=environment, input=stdin, capture_output=True, text=True,
        timeout=TIMEOUT, stdin=None if stdin is not None else subprocess.DEVNULL,
    )  # fmt: skip


def json_lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


@pytest.fixture
def shop(make_repo: MakeRepo) -> Path:
    return make_repo(FILES, name="shop")


# -- the question -------------------------------------------------------------------------------


def test_the_question_as_an_argument(shop: Path) -> None:
    done = ask(str(shop), "What does total return?")
    assert done.returncode == 0, done.stderr
    assert done.stdout == SCRIPTED + "\n", "the answer alone on stdout"
    assert "no cached state; evaluated" in done.stderr  # the cache outcome goes to stderr
    assert SCRIPTED not in done.stderr


def test_the_question_on_stdin_after_a_dash(shop: Path) -> None:
    done = ask(str(shop), "-", stdin="What does total return?\n")
    assert (done.returncode, done.stdout) == (0, SCRIPTED + "\n"), done.stderr


def test_the_question_piped_with_only_the_path(shop: Path) -> None:
    done = ask(str(shop), stdin="  What does\ntotal return?  \n")
    assert (done.returncode, done.stdout) == (0, SCRIPTED + "\n"), done.stderr


def test_an_answer_cut_short_says_why_on_stderr(shop: Path) -> None:
    done = ask(str(shop), "Why?", "--max-tokens", "2")
    assert (done.returncode, done.stdout) == (0, "This is\n"), done.stderr
    assert done.stderr.endswith(
        "repoctx: the answer reached its length limit (--max-tokens) or the context\n"
    )
    whole = ask(str(shop), "Why?")
    assert "repoctx:" not in whole.stderr


def test_the_scripted_answer_comes_from_the_environment(shop: Path) -> None:
    done = ask(str(shop), "Why?", env={"REPOCTX_FAKE_ANSWER": "Because the cart sums prices."})
    assert (done.returncode, done.stdout) == (0, "Because the cart sums prices.\n"), done.stderr


# -- usage, pack and model errors ---------------------------------------------------------------


HOW_TO_ASK = 'repoctx ask PATH... "question", or on stdin, echo question | repoctx ask PATH...'


@pytest.mark.parametrize(
    ("args", "stdin"),
    [(("   ",), None), (("-",), " \n\t\n")],
    ids=["blank-argument", "blank-stdin"],
)
def test_an_empty_question_is_a_usage_error(
    shop: Path, args: tuple[str, ...], stdin: str | None
) -> None:
    done = ask(str(shop), *args, stdin=stdin)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.count("\n") == 1 and "question is empty" in done.stderr, done.stderr
    assert HOW_TO_ASK in done.stderr


@pytest.mark.parametrize("stdin", ["", None], ids=["empty-pipe", "dev-null"])
def test_a_folder_last_with_no_question_on_stdin_says_how_to_ask(
    shop: Path, make_repo: MakeRepo, stdin: str | None
) -> None:
    other = make_repo(FILES, name="other")
    for args in [(str(shop),), (str(shop), str(other))]:
        done = ask(*args, stdin=stdin)
        assert (done.returncode, done.stdout) == (2, "")
        assert done.stderr.count("\n") == 1, done.stderr
        assert (
            f"no question: {args[-1]} is a folder, so it was taken as a repository" in done.stderr
        )
        assert HOW_TO_ASK in done.stderr


def test_the_last_argument_is_the_question_unless_it_names_a_folder(
    shop: Path, make_repo: MakeRepo
) -> None:
    other = make_repo(FILES, name="other")
    events = ask(str(shop), str(other), "--json", stdin="What does total return?")
    assert events.returncode == 0, events.stderr
    outcome = next(r for r in json_lines(events.stdout) if r["event"] == "CacheOutcome")
    both = outcome["prompt_tokens"]
    alone = ask(str(shop), "--json", stdin="What does total return?")
    outcome = next(r for r in json_lines(alone.stdout) if r["event"] == "CacheOutcome")
    assert both > outcome["prompt_tokens"], "both folders were packed"
    # a question that is no folder's path is the question, even if it looks like a path
    done = ask(str(shop), str(other / "nowhere"), stdin="ignored")
    assert (done.returncode, done.stdout) == (0, SCRIPTED + "\n"), done.stderr


def test_split_question_rule() -> None:
    folder = str(ROOT)
    assert split_question((folder, "Why?"), stdin_is_tty=True) == ([ROOT], "Why?")
    assert split_question((folder, folder), stdin_is_tty=False) == ([ROOT, ROOT], None)
    assert split_question((folder, "-"), stdin_is_tty=True) == ([ROOT], None)
    assert split_question((folder,), stdin_is_tty=False) == ([ROOT], None)
    for args in [(folder,), (folder, folder)]:
        with pytest.raises(UsageError, match="no question"):
            split_question(args, stdin_is_tty=True)
    for args in [(), ("-",), ("What is this?",)]:
        with pytest.raises(UsageError, match="pass a repository path and a question"):
            split_question(args, stdin_is_tty=True)


def test_no_arguments_is_a_usage_error() -> None:
    done = ask()
    assert done.returncode == 2 and done.stdout == ""


def test_a_path_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    done = ask(str(tmp_path / "nowhere"), "What?")
    assert done.returncode == 2
    assert "nowhere: no such directory" in done.stderr and done.stderr.count("\n") == 1


def test_a_folder_with_nothing_to_pack_is_a_pack_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = ask(str(tmp_path / "empty"), "What?")
    assert done.returncode == 3, done.stderr
    assert done.stdout == ""


@pytest.mark.parametrize("engine", ["fake", "local"], ids=["fake-engine", "llama-engine"])
def test_a_bad_model_path_is_a_model_error(shop: Path, tmp_path: Path, engine: str) -> None:
    done = ask(str(shop), "What?", "--model", str(tmp_path / "missing.gguf"), engine=engine)
    assert done.returncode == 4
    assert "missing.gguf: no such model file" in done.stderr and done.stderr.count("\n") == 1
    not_a_model = tmp_path / "notes.gguf"
    not_a_model.write_text("not a model, just notes " * 10)
    done = ask(str(shop), "What?", "--model", str(not_a_model), engine=engine)
    assert done.returncode == 4, done.stderr
    assert "not a GGUF model file" in done.stderr
    assert done.stdout == ""


# -- JSON lines ---------------------------------------------------------------------------------


def test_json_emits_the_event_stream(shop: Path) -> None:
    done = ask(str(shop), "What does total return?", "--json")
    assert done.returncode == 0, done.stderr
    records = json_lines(done.stdout)  # every line of stdout is one JSON object
    kinds = [record["event"] for record in records]
    assert {"CacheOutcome", "Token", "AnswerDone"} <= set(kinds)
    assert kinds[-1] == "AnswerDone"
    assert kinds.index("CacheOutcome") < kinds.index("Token")
    (outcome,) = [r for r in records if r["event"] == "CacheOutcome"]
    assert outcome["source"] == "none" and outcome["prompt_tokens"] > 0
    assert outcome["evaluated_tokens"] == outcome["prompt_tokens"]
    answer = records[-1]
    assert answer["text"] == SCRIPTED and answer["stop_reason"] == "end"
    assert "".join(r["text"] for r in records if r["event"] == "Token") == SCRIPTED


def test_a_question_gets_the_files_it_names_that_the_pack_left_out(make_repo: MakeRepo) -> None:
    report = "".join(
        f"def report_line_{i}(sales):\n    return sales[{i}] * {i}\n\n\n" for i in range(40)
    )
    repo = make_repo({**FILES, "shop/report.py": report}, name="shop")
    question = "What does shop/report.py compute?"
    done = ask("--budget", "200", str(repo), question)
    assert done.returncode == 0, done.stderr
    assert done.stdout == SCRIPTED + "\n"
    assert "added for this question: shop/shop/report.py (" in done.stderr
    records = json_lines(ask("--budget", "200", "--json", str(repo), question).stdout)
    (tail,) = [r for r in records if r["event"] == "TailAdded"]
    assert tail["files"] == tail["named"] == ["shop/shop/report.py"]
    assert 0 < tail["tokens"] <= tail["budget"]
    kinds = [r["event"] for r in records]
    assert kinds.index("TailAdded") < kinds.index("CacheOutcome")
    off = ask("--budget", "200", "--tail-tokens", "0", str(repo), question)
    assert off.returncode == 0 and "added for this question" not in off.stderr
    whole = ask(str(repo), question)
    assert whole.returncode == 0 and "added for this question" not in whole.stderr, "it fits"


# -- Ctrl-C -------------------------------------------------------------------------------------


def start(args: list[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "repoctx", "ask", *args],
        cwd=ROOT, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def read_until(stream: IO[str], event: str, done: int = 0) -> dict[str, Any]:
    """Read JSON lines until an event of this kind (a Progress of the prefill with at least
    ``done`` tokens); the reader's timeout is the test's subprocess timeout."""
    for line in stream:
        record = json.loads(line)
        prefill = event != "Progress" or record.get("stage") == "prefill"
        if record["event"] == event and prefill and record.get("done", 0) >= done:
            return record
    raise AssertionError(f"the process ended before a {event} event")


def interrupt(process: subprocess.Popen[str]) -> tuple[str, str]:
    process.send_signal(signal.SIGINT)
    try:
        return process.communicate(timeout=TIMEOUT)
    finally:
        process.kill()


def test_ctrl_c_while_answering_stops_with_exit_130(shop: Path) -> None:
    long_answer = " ".join(["word"] * 200)
    env = {"REPOCTX_ENGINE": "fake", "REPOCTX_FAKE_ANSWER": long_answer,
           "REPOCTX_FAKE_TOKEN_S": "0.05"}  # fmt: skip
    process = start([str(shop), "Go on?", "--json"], env)
    assert process.stdout is not None
    read_until(process.stdout, "Token")
    stdout, stderr = interrupt(process)
    assert process.returncode == 130, stderr
    records = json_lines(stdout)
    assert records[-1]["event"] == "AnswerDone" and records[-1]["stop_reason"] == "cancelled"
    assert len(records[-1]["text"]) < len(long_answer)
    assert "interrupted" in stderr


def big_repository(make_repo: MakeRepo) -> Path:
    """~11K tokens of Python: a prefill of about a second with the tiny model."""
    files = {}
    for module in range(10):
        functions = [
            f"def handler_{module}_{n}(request, limit={n}):\n"
            f'    """Handle request {n} of module {module}: validate, then dispatch."""\n'
            f"    if request.size > limit * {module + 1}:\n"
            f"        raise ValueError('request {n} is too large for module {module}')\n"
            f"    return dispatch(request, priority={n % 7}, retries={module % 3})\n\n\n"
            for n in range(16)
        ]
        files[f"service/module_{module:02d}.py"] = "".join(functions)
    return make_repo(files, name="service")


@pytest.fixture
def engine_home(tmp_path: Path) -> Iterator[Path]:
    """A REPOCTX_HOME whose resident engine is stopped at the end."""
    home = tmp_path / "home"
    yield home
    stop_resident_engine(home)


def test_ctrl_c_during_the_prefill_keeps_a_checkpoint_for_the_next_run(
    make_repo: MakeRepo, tmp_path: Path, engine_home: Path
) -> None:
    """Through the resident engine (REPOCTX_ENGINE unset): Ctrl-C in `repoctx ask` cancels the
    prefill in the server, which keeps a checkpoint; a new server restores it from disk."""
    repo = big_repository(make_repo)
    model = synth.write_synthetic_gguf(tmp_path / "tiny.gguf", synth.TINY, LLAMA3_VOCAB)
    env = {"REPOCTX_HOME": str(engine_home), "REPOCTX_ENGINE": ""}
    args = [str(repo), "What does handler_3_4 do?", "--model", str(model), "--json",
            "--max-tokens", "4"]  # fmt: skip
    process = start(args, env)
    assert process.stdout is not None
    progress = read_until(process.stdout, "Progress", done=1536)
    total = progress["total"]
    assert total > 8_000, "the prompt must be long enough to interrupt its prefill"
    stdout, stderr = interrupt(process)
    assert process.returncode == 130, stderr
    records = json_lines(stdout)
    assert "CacheOutcome" not in {r["event"] for r in records}, "stopped during the prefill"
    assert "saved for the next run" in stderr
    stop_resident_engine(engine_home)  # it finishes its saves; the next run starts a new one
    (checkpoint,) = KVStore(engine_home / "cache" / "kv").entries()
    assert 1536 <= checkpoint.n_tokens < total

    done = subprocess.run(
        [sys.executable, "-m", "repoctx", "ask", *args], cwd=ROOT, env={**os.environ, **env},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=TIMEOUT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (outcome,) = [r for r in json_lines(done.stdout) if r["event"] == "CacheOutcome"]
    assert outcome["source"] == "disk"
    assert outcome["restored_tokens"] == checkpoint.n_tokens
    assert outcome["evaluated_tokens"] == total - checkpoint.n_tokens


def test_continue_asks_in_the_latest_conversation(
    shop: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from repoctx.conversations import ConversationStore

    env = {"REPOCTX_HOME": str(tmp_path / "home")}
    alone = ask("-c", str(shop), "And the pears?", env=env)
    assert alone.returncode == 2 and "ask once without --continue" in alone.stderr
    first = ask(str(shop), "What does total return?", env=env)
    follow = ask("--continue", str(shop), "And the pears?", env=env)
    assert (first.returncode, follow.returncode) == (0, 0), first.stderr + follow.stderr
    monkeypatch.setenv("REPOCTX_HOME", env["REPOCTX_HOME"])
    (conversation,) = ConversationStore().list([shop])
    asked = [m.content for m in conversation.messages if m.role == "user"]
    assert asked == ["What does total return?", "And the pears?"]

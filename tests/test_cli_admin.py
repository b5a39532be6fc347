"""`repoctx models ...` and `repoctx cache ...` as a user runs them: every name `models list`
shows works as --model and $REPOCTX_MODEL, names and repositories are never cut in tables (at
80 columns or in a pipe), and --json prints what the tables show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from repo_helpers import MakeRepo

from repoctx.kv import io as kvio
from repoctx.kv.store import Entry, KVStore, StateKey
from repoctx.model import hub
from repoctx.model.choice import EMBEDDED_NAME, MODEL_ENV, default_model_path
from repoctx.model.modelfile import read_model_info

FILES = {"app.py": "import util\nprint(util.X)\n", "util.py": "X = 1\n"}
KEY = StateKey("sha256:model-a", "f16", True, "llama.cpp b5000")
LONG_NAME = "some-org/an-unusually-long-repository-name-GGUF:models/an-unusually-long-file.gguf"


def repoctx(
    *args: str, home: Path, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "REPOCTX_HOME": str(home), "COLUMNS": "80", **env}
    return subprocess.run(
        [sys.executable, "-m", "repoctx", *args],
        capture_output=True, text=True, cwd=cwd, env=environment, timeout=120,
    )  # fmt: skip


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A REPOCTX_HOME holding one downloaded GGUF that no registry entry names."""
    home = tmp_path / "home"
    repo_id, filename = LONG_NAME.split(":")
    model = home / "data" / "models" / repo_id / filename
    model.parent.mkdir(parents=True)
    model.write_bytes(default_model_path().read_bytes())
    return home


def listed_models(home: Path) -> list[dict[str, Any]]:
    done = repoctx("models", "list", "--json", home=home)
    assert done.returncode == 0, done.stderr
    records: list[dict[str, Any]] = json.loads(done.stdout)
    return records


def test_models_list_json_shows_every_model(home: Path) -> None:
    records = {record["name"]: record for record in listed_models(home)}
    assert list(records) == [EMBEDDED_NAME, *hub.REGISTRY, LONG_NAME]
    embedded = records[EMBEDDED_NAME]
    assert (embedded["state"], embedded["path"]) == ("embedded", str(default_model_path()))
    assert records[LONG_NAME]["state"] == "downloaded"
    assert records["llama-3-8b-instruct-gradient-1048k"]["path"] is None


def test_pulling_a_model_derives_its_tokenizer(tmp_path: Path) -> None:
    """`models pull` stores the tokenizer derived from the model file, so that the first pack
    with the model reads it instead of deriving it."""
    home = tmp_path / "home"
    done = repoctx("models", "pull", hub.EMBEDDED_NAME, home=home)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == default_model_path()
    fingerprint = read_model_info(default_model_path()).vocab_fingerprint
    (stored,) = (home / "cache" / "tokenizers").iterdir()
    assert stored.name == f"{fingerprint}.ranks"
    written = stored.stat().st_mtime_ns
    assert repoctx("models", "pull", hub.EMBEDDED_NAME, home=home).returncode == 0
    assert stored.stat().st_mtime_ns == written  # found, not derived again


def test_every_listed_name_works_as_model_flag_and_environment(
    home: Path, make_repo: MakeRepo
) -> None:
    repo = str(make_repo(FILES))
    for record in listed_models(home):
        name = record["name"]
        by_flag = repoctx("pack", repo, "--stats", "--model", name, home=home)
        by_env = repoctx("pack", repo, "--stats", home=home, **{MODEL_ENV: name})
        for done in (by_flag, by_env):
            if record["path"] is None:  # known, but not downloaded: says how to get it
                assert done.returncode == 4 and f"repoctx models pull {name}" in done.stderr
            else:
                assert done.returncode == 0, f"{name}: {done.stderr}"
    unknown = repoctx("pack", repo, "--model", "smollm2", home=home)
    assert unknown.returncode == 4
    assert "smollm2: no such model file" in unknown.stderr
    assert "`repoctx models list` shows" in unknown.stderr


def test_models_list_never_cuts_a_name(home: Path) -> None:
    piped = repoctx("models", "list", home=home)
    assert piped.returncode == 0, piped.stderr
    for name in (EMBEDDED_NAME, *hub.REGISTRY, LONG_NAME):
        assert any(name in line for line in piped.stdout.splitlines()), name
    assert str(default_model_path()) in piped.stdout, "a pipe gets whole rows, however long"


def test_models_list_fits_a_terminal_of_80_columns_without_cutting_short_names(
    home: Path,
) -> None:
    script = "stty cols 80; exec " + " ".join([sys.executable, "-m", "repoctx", "models", "list"])
    done = subprocess.run(
        ["script", "-qec", script, "/dev/null"],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "REPOCTX_HOME": str(home), "TERM": "dumb", "NO_COLOR": "1"},
    )  # fmt: skip
    if done.returncode != 0 and "script" in done.stderr:
        pytest.skip("no `script` to run a pseudo-terminal")
    lines = done.stdout.splitlines()
    assert lines and all(len(line) <= 80 for line in lines)
    for name in (EMBEDDED_NAME, *hub.REGISTRY):
        assert any(name in line for line in lines), name
    assert "…" not in done.stdout


def save_state(home: Path, tokens: list[int], repositories: list[str]) -> Entry:
    store = KVStore(home / "cache" / "kv", min_free_bytes=0)
    data = bytes(range(256)) * len(tokens)

    def write(fd: int) -> str:
        os.pwrite(fd, data, 0)
        return kvio.digest(memoryview(data))

    entry = store.save(
        KEY, tokens, write, label="model.gguf: 1 tokens", expected_bytes=len(data),
        repositories=repositories,
    )  # fmt: skip
    assert entry is not None
    return entry


def test_cache_list_shows_repositories_and_clear_takes_a_folder(
    tmp_path: Path, make_repo: MakeRepo
) -> None:
    home = tmp_path / "home"
    deep = tmp_path / "a-folder-with-a-long-name" / "and-another-long-one" / "projects"
    api = make_repo(FILES, name="inventory-api-service", parent=deep)
    web = make_repo(FILES, name="web", parent=deep)
    both = save_state(home, list(range(100, 200)), [str(api), str(web)])
    alone = save_state(home, list(range(300, 400)), [str(web)])

    done = repoctx("cache", "list", "--json", home=home)
    assert done.returncode == 0, done.stderr
    records = {record["id"]: record for record in json.loads(done.stdout)}
    assert records[both.id]["repositories"] == [str(api), str(web)]
    assert records[alone.id]["repositories"] == [str(web)]
    assert records[both.id]["tokens"] == 100

    table = repoctx("cache", "list", home=home).stdout
    assert str(api) in table and both.id[:12] in table and "…" not in table

    assert "removed 1 KV states" in repoctx("cache", "clear", ".", home=home, cwd=api).stdout
    assert [entry.id for entry in KVStore(home / "cache" / "kv").entries()] == [alone.id]
    assert "removed 1 KV states" in repoctx("cache", "clear", "WEB", home=home).stdout
    assert KVStore(home / "cache" / "kv").entries() == []

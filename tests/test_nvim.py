"""The Neovim plugin for real: Debian's neovim (installed when missing), `nvim --headless` with
assets/nvim on the runtimepath, the server with the scripted engine, a temporary repository.
A Lua script asks a question, asks about a range of lines, stops a long answer, asks about a
visual selection through the mapping, and writes the answer buffer to a file that the test reads."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from repo_helpers import MakeRepo

from repoctx.conversations import ConversationStore

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ROOT / "assets" / "nvim"
ANSWER = " ".join(["The", "main", "function", "prints", "the", "greeting", "again."] * 6)

SCRIPT = r"""
local out, repo, py = OUT, REPO, PY
local function wait_answer(what)
  assert(vim.wait(30000, function() return not require('repoctx').busy() end, 20), what)
end
local ok, err = pcall(function()
  local repoctx = require('repoctx')
  repoctx.setup({ cmd = { py, '-m', 'repoctx', 'serve', '--stdio' } })
  vim.cmd('edit ' .. vim.fn.fnameescape(repo .. '/app.py'))
  vim.cmd('RepoctxAsk What does main do?')
  wait_answer('no answer to the first question')
  vim.cmd('5,6RepoctxAsk Explain these lines')
  wait_answer('no answer about the lines')
  local conversation = repoctx.last_result.conversationId
  vim.cmd('RepoctxNew')
  vim.cmd('RepoctxAsk A long one')
  assert(vim.wait(30000, function()
    local buf = vim.fn.bufnr('repoctx://answer')
    return vim.tbl_contains(vim.api.nvim_buf_get_lines(buf, 0, -1, false), '## A long one')
  end, 10), 'the long answer did not start')
  vim.cmd('RepoctxStop')
  wait_answer('the long answer did not stop')
  local stopped = repoctx.last_result
  -- select the word "main" charwise and use the mapping, which prompts for the question
  local keys = '5Gwve<Plug>(RepoctxAskSelection)What is this name?<CR>'
  vim.api.nvim_feedkeys(vim.api.nvim_replace_termcodes(keys, true, false, true), 'mx', false)
  wait_answer('no answer about the selection')
  local buf = vim.fn.bufnr('repoctx://answer')
  vim.fn.writefile(vim.api.nvim_buf_get_lines(buf, 0, -1, false), out .. '/answer.txt')
  vim.fn.writefile({ vim.fn.json_encode({
    first = conversation,
    stopped = stopped,
    last = repoctx.last_result,
    windows = #vim.api.nvim_list_wins(),
  }) }, out .. '/state.json')
end)
if not ok then
  vim.fn.writefile(vim.split(tostring(err), '\n'), out .. '/error.txt')
end
vim.cmd('qa!')
"""


@pytest.fixture(scope="module")
def nvim() -> str:
    found = shutil.which("nvim")
    if found:
        return found
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("nvim is not installed and installing Debian's neovim needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # the index may be stale or unsigned here; the install uses whatever index there is
    subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=300)
    done = subprocess.run(
        ["apt-get", "install", "-y", "neovim"], env=env, capture_output=True, timeout=600
    )
    found = shutil.which("nvim")
    if not found:
        tail = (done.stdout + done.stderr).decode(errors="replace")[-800:]
        pytest.skip(f"`apt-get install -y neovim` failed (exit {done.returncode}): {tail}")
    return found


def test_plugin_streams_answers_into_a_split(
    nvim: str, make_repo: MakeRepo, tmp_path: Path
) -> None:
    repo = make_repo(
        {"app.py": "def greet():\n    return 'hi'\n\n\ndef main():\n    print(greet())\n"}
    )
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "test.lua"
    values = {"OUT": str(out), "REPO": str(repo), "PY": sys.executable}
    header = "".join(f"local {k} = {json.dumps(v)}\n" for k, v in values.items())
    script.write_text(header + SCRIPT)
    env = {
        **os.environ,
        "REPOCTX_ENGINE": "fake",
        "REPOCTX_FAKE_ANSWER": ANSWER,
        "REPOCTX_FAKE_TOKEN_S": "0.04",
        "PYTHONPATH": os.pathsep.join(p for p in [str(ROOT), os.environ.get("PYTHONPATH")] if p),
    }
    command = [
        nvim, "--headless", "-u", "NONE", "-i", "NONE", "-n",
        "--cmd", f"set rtp+={PLUGIN}",
        "-c", "filetype on",
        "-c", "runtime plugin/repoctx.lua",
        "-c", f"luafile {script}",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, timeout=60)
    error = out / "error.txt"
    assert not error.exists(), error.read_text() + done.stderr.decode(errors="replace")
    assert done.returncode == 0, done.stderr.decode(errors="replace")

    answer = (out / "answer.txt").read_text()
    assert answer.startswith(f"## What does main do?\n\n{ANSWER}\n\n## Explain these lines\n")
    assert "_(selection of" in answer and "lines 5-6)_" in answer and "app.py, line 5)_" in answer
    assert answer.count(ANSWER) == 3
    assert "## A long one\n\nThe\n[stopped]\n\n## What is this name?\n" in answer

    check_conversations(repo, json.loads((out / "state.json").read_text()))


def check_conversations(repo: Path, state: dict[str, Any]) -> None:
    assert state["windows"] == 2  # the file and the answer split
    assert state["stopped"]["stopReason"] == "cancelled"
    assert state["stopped"]["conversationId"] != state["first"]
    later = ConversationStore().get([repo], state["last"]["conversationId"])
    assert later is not None and later.messages[-1].content == ANSWER
    assert later.messages[-2].content == (
        "What is this name?\n\nSelected in `proj/app.py` (line 5):\n\n```python\nmain\n```"
    )
    asked = ConversationStore().get([repo], state["first"])
    assert asked is not None
    questions = [m.content for m in asked.messages if m.role == "user"]
    assert (
        questions[0] == "What does main do?\n\nThe file open in the editor: `proj/app.py` (line 1)."
    )
    assert questions[1] == (
        "Explain these lines\n\nSelected in `proj/app.py` (lines 5-6):\n\n"
        "```python\ndef main():\n    print(greet())\n```"
    )

"""On the CUDA build, a process that imports numpy before llama_cpp crashes while loading a
model. The core must therefore not import numpy on its own, and the engine must import llama_cpp
first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return set(done.stdout.split())


def test_the_core_and_its_front_ends_do_not_import_numpy() -> None:
    loaded = modules_after(
        "import repoctx.cli.main, repoctx.cli.pack, repoctx.cli.ask, repoctx.session, "
        "repoctx.protocol.serve, repoctx.pack.pipeline, repoctx.tokens.count, tui.app"
    )
    assert "numpy" not in loaded
    assert "llama_cpp" not in loaded  # loaded only when a model runs: `repoctx --help` is fast


def test_the_engine_imports_llama_cpp_before_numpy() -> None:
    source = (ROOT / "repoctx" / "engine" / "llama.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import ", "from "))]
    first_third_party = next(i for i, line in enumerate(imports) if "llama_cpp" in line)
    assert all(
        line.split()[1].split(".")[0] in sys.stdlib_module_names or line.startswith("from __")
        for line in imports[:first_third_party]
    )
    loaded = modules_after("import repoctx.engine.llama")
    assert {"llama_cpp", "numpy"} <= loaded


def test_the_cli_imports_llama_cpp_before_running_a_model() -> None:
    source = (ROOT / "repoctx" / "cli" / "ask.py").read_text()
    assert source.index("import llama_cpp") < source.index("from repoctx.session import")
    source = (ROOT / "repoctx" / "cli" / "engine.py").read_text()  # the resident engine's process
    assert source.index("import llama_cpp") < source.index("from repoctx.resident.server import")


def test_packing_imports_rich_tiktoken_and_concurrent_futures_only_when_used() -> None:
    """A warm pack counts nothing and prints no table: what only counting, worker processes
    or ``--stats`` need is imported where they start."""
    loaded = modules_after("import repoctx.config, repoctx.pack.pipeline, repoctx.cli.pack")
    assert not {"rich", "tiktoken", "concurrent.futures", "ctypes"} & loaded

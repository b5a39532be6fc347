"""The ranks that ship for the embedded model's vocabulary and Llama 3's: equal to what
derivation makes, found by the ranks fingerprint of any model file on those vocabularies, read
instead of deriving on a machine's first pack, portable, and replaced by derivation (with a
notice) should an installed file be damaged."""

from __future__ import annotations

import zlib
from pathlib import Path

import gguf
import pytest

from repoctx.events import Event, Notice
from repoctx.model.choice import default_model_path
from repoctx.model.modelfile import FIM_ID_KEYS, read_model_info, read_vocabulary
from repoctx.tokens import bperanks, shippedranks
from repoctx.tokens import count as tokens

DATA = Path(__file__).parent / "data"
GPT2_VOCAB = DATA / "ggml-vocab-gpt-2.gguf"
LLAMA3_VOCAB = DATA / "ggml-vocab-llama-bpe.gguf"
SOURCES = (default_model_path(), LLAMA3_VOCAB)  # what the shipped files are derived from
TEXT = "def main() -> None:\n    print('héllo, wörld')  # 42 <|im_end|>\n"
HOW = (
    "write them with python -c 'from repoctx.tokens.shippedranks import write_shipped; "
    "write_shipped(MODEL)' for each of SOURCES, and remove files no source makes"
)


def test_each_shipped_file_holds_what_derivation_makes_of_its_source() -> None:
    expected: set[str] = set()
    for source in SOURCES:
        info = read_model_info(source)
        path = shippedranks.shipped_path(info)
        assert path is not None, f"no shipped ranks for {source.name}; {HOW}"
        expected.add(path.name)
        assert shippedranks.decode(path.read_bytes()) == bperanks.derive_ranks(
            read_vocabulary(source)
        ), f"the shipped ranks of {source.name} differ from what derivation makes now; {HOW}"
    shipped = {p.name for p in shippedranks.SHIPPED_DIR.iterdir()}
    assert shipped == expected, f"shipped files no source makes: {shipped - expected}; {HOW}"


def _copy(tmp_path: Path, file: str, **changes: object) -> Path:
    """The GPT-2 vocabulary in another model file, with ``changes`` (bos, title, pre, types,
    merges, fim)."""
    vocab = read_vocabulary(GPT2_VOCAB)
    path = tmp_path / f"{file}.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_name(str(changes.get("title", "gpt-2")))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(str(changes.get("pre", "gpt-2")))
    writer.add_token_list(vocab.tokens)
    types = list(vocab.token_types)
    if "types" in changes:
        types[-1] = 4
    writer.add_token_types(types)
    writer.add_token_merges(vocab.merges[:-1] if "merges" in changes else vocab.merges)
    writer.add_bos_token_id(int(str(changes.get("bos", 50256))))
    if "fim" in changes:
        writer.add_uint32("tokenizer.ggml.fim_pre_token_id", 1)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    return path


def test_the_ranks_fingerprint_covers_what_derivation_reads_and_nothing_else(
    tmp_path: Path,
) -> None:
    """Models on one vocabulary share it whatever their name or special token ids; anything
    derivation reads changes it: tokens' types, merges, the pre-tokenizer, and whether the file
    names fill-in-the-middle tokens."""
    base = read_model_info(_copy(tmp_path, "base")).ranks_fingerprint
    assert base is not None
    same = read_model_info(_copy(tmp_path, "renamed", title="a fine-tune", bos=0))
    assert same.ranks_fingerprint == base and same.vocab_fingerprint != same.ranks_fingerprint
    for change in ({"types": 1}, {"merges": 1}, {"pre": "qwen2"}, {"fim": 1}):
        other = read_model_info(_copy(tmp_path, next(iter(change)), **change))
        assert other.ranks_fingerprint != base, change


def test_the_fill_in_the_middle_keys_are_the_ones_derivation_reads() -> None:
    assert {key for keys, _ in bperanks._FIM_TEXTS for key in keys} == FIM_ID_KEYS


@pytest.mark.parametrize("name", ["ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-bpe.gguf"])
def test_the_format_reads_back_what_it_wrote(name: str) -> None:
    ranks = bperanks.derive_ranks(read_vocabulary(DATA / name))
    assert shippedranks.decode(shippedranks.encode(ranks)) == ranks


@pytest.mark.parametrize("damage", ["magic", "truncated", "flipped", "longer", "empty"])
def test_damaged_files_do_not_read_back(damage: str) -> None:
    ranks = bperanks.derive_ranks(read_vocabulary(GPT2_VOCAB))
    data = shippedranks.encode(ranks)
    damaged = {
        "magic": b"x" + data[1:],
        "truncated": data[: len(data) // 2],
        "flipped": data[:-40] + bytes([data[-40] ^ 0xFF]) + data[-39:],
        "longer": data[:24] + zlib.compress(b'{"pieces": 3}\n' + b"\0" * 64),
        "empty": b"",
    }[damage]
    with pytest.raises(shippedranks.DamagedShippedRanks):
        shippedranks.decode(damaged)


@pytest.mark.parametrize("model", SOURCES, ids=["embedded", "llama3"])
def test_a_first_pack_with_a_shipped_vocabulary_derives_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, derivations: list[str], model: Path
) -> None:
    """The shipped ranks are read as derived ones would be (by a worker process during the
    scan), and kept in the cache, which later runs read faster (marshal)."""
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path))
    assert tokens.ranks_to_derive(model)
    tokenizer = tokens.load_tokenizer(model)
    assert tokenizer.count(TEXT) > 0 and derivations == []
    assert not tokens.ranks_to_derive(model)


def test_other_vocabularies_are_still_derived(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, derivations: list[str]
) -> None:
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path))
    assert tokens.ranks_to_derive(GPT2_VOCAB)
    tokens.prepare_tokenizer(GPT2_VOCAB)
    assert derivations == [GPT2_VOCAB.name] and not tokens.ranks_to_derive(GPT2_VOCAB)


def test_a_damaged_shipped_file_is_replaced_by_derivation_with_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, derivations: list[str]
) -> None:
    model = default_model_path()
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path / "home"))
    expected = tokens.load_tokenizer(model).count(TEXT)
    monkeypatch.setattr(tokens, "_TOKENIZERS", {})
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path / "another home"))
    installed = tmp_path / "shipped"
    installed.mkdir()
    fingerprint = read_model_info(model).ranks_fingerprint
    (installed / f"{fingerprint}.ranks").write_bytes(b"repoctx-shipped-ranks-1\nnot zlib")
    monkeypatch.setattr(shippedranks, "SHIPPED_DIR", installed)
    events: list[Event] = []
    tokenizer = tokens.load_tokenizer(model, events.append)
    assert tokenizer.count(TEXT) == expected and derivations == [model.name]
    (notice,) = events
    assert isinstance(notice, Notice)
    assert "damaged" in notice.message and "reinstall repoctx" in notice.message

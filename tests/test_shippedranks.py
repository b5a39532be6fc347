"""The ranks that ship for the embedded model's vocabulary: equal to what derivation makes, read
instead of deriving on a machine's first pack, portable, and replaced by derivation (with a
notice) should the installed file be damaged."""

from __future__ import annotations

import zlib
from pathlib import Path

import pytest

from repoctx.events import Event, Notice
from repoctx.model.choice import default_model_path
from repoctx.model.modelfile import read_model_info, read_vocabulary
from repoctx.tokens import bperanks, shippedranks
from repoctx.tokens import count as tokens

DATA = Path(__file__).parent / "data"
TEXT = "def main() -> None:\n    print('héllo, wörld')  # 42 <|im_end|>\n"


def test_the_embedded_vocabulary_ships_the_ranks_derivation_makes() -> None:
    info = read_model_info(default_model_path())
    path = shippedranks.shipped_path(info)
    assert path is not None, (
        "no shipped ranks for the embedded model's vocabulary; write them with "
        "python -c 'from repoctx.model.choice import default_model_path as m; "
        "from repoctx.tokens.shippedranks import write_shipped as w; w(m())'"
    )
    shipped = shippedranks.decode(path.read_bytes())
    assert shipped == bperanks.derive_ranks(read_vocabulary(info.path)), (
        "the shipped ranks differ from what derivation makes now; write them again (see above)"
    )


@pytest.mark.parametrize("name", ["ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-bpe.gguf"])
def test_the_format_reads_back_what_it_wrote(name: str) -> None:
    ranks = bperanks.derive_ranks(read_vocabulary(DATA / name))
    assert shippedranks.decode(shippedranks.encode(ranks)) == ranks


@pytest.mark.parametrize("damage", ["magic", "truncated", "flipped", "longer", "empty"])
def test_damaged_files_do_not_read_back(damage: str) -> None:
    ranks = bperanks.derive_ranks(read_vocabulary(DATA / "ggml-vocab-gpt-2.gguf"))
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


def test_a_first_pack_with_the_embedded_model_derives_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, derivations: list[str]
) -> None:
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path))
    assert not tokens.ranks_to_derive(default_model_path())
    tokenizer = tokens.load_tokenizer(default_model_path())
    assert tokenizer.count(TEXT) > 0 and derivations == []
    assert not (tmp_path / "cache" / "tokenizers").exists()


def test_other_vocabularies_are_still_derived(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, derivations: list[str]
) -> None:
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path))
    model = DATA / "ggml-vocab-gpt-2.gguf"
    assert tokens.ranks_to_derive(model)
    tokens.prepare_tokenizer(model)
    assert derivations == [model.name] and not tokens.ranks_to_derive(model)


def test_a_damaged_shipped_file_is_replaced_by_derivation_with_a_notice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, derivations: list[str]
) -> None:
    monkeypatch.setenv("REPOCTX_HOME", str(tmp_path / "home"))
    model = default_model_path()
    expected = tokens.load_tokenizer(model).count(TEXT)
    monkeypatch.setattr(tokens, "_TOKENIZERS", {})
    installed = tmp_path / "shipped"
    installed.mkdir()
    fingerprint = read_model_info(model).vocab_fingerprint
    (installed / f"{fingerprint}.ranks").write_bytes(b"repoctx-shipped-ranks-1\nnot zlib")
    monkeypatch.setattr(shippedranks, "SHIPPED_DIR", installed)
    events: list[Event] = []
    tokenizer = tokens.load_tokenizer(model, events.append)
    assert tokenizer.count(TEXT) == expected and derivations == [model.name]
    (notice,) = events
    assert isinstance(notice, Notice)
    assert "damaged" in notice.message and "reinstall repoctx" in notice.message

"""Synthetic llama GGUFs: they load in llama.cpp, tokenize like their vocabulary source, give
finite logits and generate deterministically; bad shapes and vocabulary sources fail clearly."""

from __future__ import annotations

# llama_cpp must be imported before numpy (and gguf, which imports numpy): on the CUDA image,
# numpy first makes llama.cpp crash at model load. Keep this the first third-party import.
import llama_cpp  # isort: skip
from llama_cpp import Llama  # isort: skip

import dataclasses
import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter, quants

from repoctx.errors import ModelError, TokenizerError, UsageError
from repoctx.model import synth

LLAMA3_VOCAB = Path(__file__).parent / "data" / "ggml-vocab-llama-bpe.gguf"
N_CTX = 4096


def load(path: Path, n_ctx: int = N_CTX) -> Llama:
    return Llama(str(path), n_ctx=n_ctx, n_batch=512, seed=0, verbose=False)


def last_logits(llm: Llama) -> np.ndarray:
    logits = llama_cpp.llama_get_logits_ith(llm.ctx, -1)
    return np.ctypeslib.as_array(logits, shape=(llm.n_vocab(),)).copy()


def greedy(llm: Llama, prompt: bytes, n: int = 8) -> list[int]:
    out: list[int] = []
    for token in llm.generate(llm.tokenize(prompt), temp=0.0, reset=True):
        out.append(token)
        if len(out) == n:
            break
    return out


@pytest.fixture(scope="module")
def builtin_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Llama]]:
    """The TINY model (f32) with the built-in vocabulary."""
    path = synth.write_synthetic_gguf(tmp_path_factory.mktemp("synth") / "tiny.gguf", synth.TINY)
    llm = load(path)
    yield path, llm
    llm.close()


@pytest.fixture(scope="module")
def llama3_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Llama]]:
    """The TINY model in f16 with Llama 3's vocabulary."""
    path = tmp_path_factory.mktemp("synth") / "tiny-llama3.gguf"
    synth.write_synthetic_gguf(path, dataclasses.replace(synth.TINY, quant="f16"), LLAMA3_VOCAB)
    llm = load(path)
    yield path, llm
    llm.close()


@pytest.fixture(params=["builtin_model", "llama3_model"])
def model(request: pytest.FixtureRequest) -> tuple[Path, Llama]:
    loaded: tuple[Path, Llama] = request.getfixturevalue(request.param)
    return loaded


def test_loads_with_a_one_million_token_training_context(
    model: tuple[Path, Llama],
) -> None:
    path, llm = model
    assert llm.n_ctx() == N_CTX
    assert llama_cpp.llama_model_n_ctx_train(llm.model) == 1_048_576
    assert llm.metadata["llama.context_length"] == "1048576"
    assert synth.read_metadata(path)["llama.context_length"][0] == 1_048_576
    assert "<|eot_id|>" in llm.metadata["tokenizer.chat_template"]


def test_eval_gives_finite_logits(model: tuple[Path, Llama]) -> None:
    _, llm = model
    llm.reset()
    llm.eval(llm.tokenize(b"hello world, this is a repository"))
    logits = last_logits(llm)
    assert logits.shape == (llm.n_vocab(),)
    assert np.isfinite(logits).all()
    assert 0.0 < float(logits.std()) < 100.0


def test_greedy_generation_is_deterministic(model: tuple[Path, Llama]) -> None:
    _, llm = model
    first = greedy(llm, b"hello world")
    assert len(first) == 8
    assert greedy(llm, b"hello world") == first


def test_builtin_vocab_tokenizes_with_merges_and_special_tokens(
    builtin_model: tuple[Path, Llama],
) -> None:
    _, llm = builtin_model
    hello = llm.tokenize(b"hello world", add_bos=False)
    assert len(hello) < len("hello world")
    assert llm.detokenize(hello) == b"hello world"
    header = llm.tokenize(b"<|start_header_id|>user<|end_header_id|>", add_bos=False, special=True)
    assert [
        llm.detokenize([header[0]], special=True),
        llm.detokenize([header[-1]], special=True),
    ] == [
        b"<|start_header_id|>",
        b"<|end_header_id|>",
    ]
    assert llm.token_bos() == llm.n_vocab() - len(synth.SPECIAL_TOKENS)


def test_llama3_vocab_tokenizes_exactly_like_its_source(
    llama3_model: tuple[Path, Llama],
) -> None:
    _, llm = llama3_model
    source = Llama(str(LLAMA3_VOCAB), vocab_only=True, verbose=False)
    texts = [b"hello world", b"def main():\n    return 42  # \xc3\xa9t\xc3\xa9", b"  \t\n\nx=1"]
    for text in texts:
        assert llm.tokenize(text) == source.tokenize(text)
    special = b"<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
    assert llm.tokenize(special, special=True) == source.tokenize(special, special=True)
    assert llm.tokenize(b"hello world") == [128000, 15339, 1917]
    source.close()


def test_llama3_vocab_copies_every_tokenizer_key() -> None:
    vocab = synth.load_vocab(LLAMA3_VOCAB)
    source = synth.read_metadata(LLAMA3_VOCAB)
    for key, entry in source.items():
        if key.startswith("tokenizer."):
            assert vocab[key] == entry
    assert len(vocab["tokenizer.ggml.tokens"][0]) == 128256
    assert vocab["tokenizer.chat_template"][0] == synth.LLAMA3_CHAT_TEMPLATE


def test_builtin_vocab_pads_to_the_shape_vocab_size(
    tmp_path: Path, builtin_model: tuple[Path, Llama]
) -> None:
    shape = dataclasses.replace(synth.TINY, quant="f16", vocab_size=128256)
    llm = load(synth.write_synthetic_gguf(tmp_path / "padded.gguf", shape), n_ctx=512)
    assert llm.n_vocab() == 128256
    assert llm.tokenize(b"hello world") == builtin_model[1].tokenize(b"hello world")
    llm.eval(llm.tokenize(b"hello world"))
    assert np.isfinite(last_logits(llm)).all()
    llm.close()
    gpt2_vocab = LLAMA3_VOCAB.with_name("ggml-vocab-gpt-2.gguf")
    with pytest.raises(UsageError, match="50,257 tokens, not the 128,256"):
        synth.write_synthetic_gguf(tmp_path / "mismatch.gguf", shape, gpt2_vocab)
    with pytest.raises(UsageError, match="below the built-in"):
        synth.builtin_vocab(size=100)


@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_quantized_tiny_models_load_and_give_finite_logits(tmp_path: Path, quant: str) -> None:
    shape = dataclasses.replace(synth.TINY, n_embd=256, n_ff=512, quant=quant)  # type: ignore[arg-type]
    path = synth.write_synthetic_gguf(tmp_path / f"{quant}.gguf", shape)
    types = {t.name: t.tensor_type for t in GGUFReader(path).tensors}
    if quant == "q8_0":
        assert types["blk.0.attn_q.weight"] == GGMLQuantizationType.Q8_0
    else:
        assert types["token_embd.weight"] == GGMLQuantizationType.Q4_K
        assert types["blk.0.attn_v.weight"] == GGMLQuantizationType.Q4_K
        assert types["blk.1.attn_v.weight"] == GGMLQuantizationType.Q6_K
        assert types["output.weight"] == GGMLQuantizationType.Q6_K
    assert types["blk.0.attn_norm.weight"] == GGMLQuantizationType.F32
    llm = load(path, n_ctx=512)
    llm.eval(llm.tokenize(b"hello world"))
    assert np.isfinite(last_logits(llm)).all()
    llm.close()


@pytest.mark.parametrize(
    "qtype", [GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q6_K]
)
def test_random_quant_blocks_dequantize_to_small_centred_weights(
    qtype: GGMLQuantizationType,
) -> None:
    spec = synth.TensorSpec("w", (64, 1024), qtype)
    weights = quants.dequantize(synth.random_weights(spec, np.random.default_rng(1)), qtype)
    assert weights.shape == (64, 1024)
    assert abs(float(weights.mean())) < 0.002
    assert 0.015 < float(weights.std()) < 0.025


def test_llama3_8b_plan_matches_a_real_q4_k_m_file() -> None:
    specs = synth.tensor_plan(synth.LLAMA3_8B, 128256)
    assert len(specs) == 2 + 32 * 9 + 1
    q6 = [s.name for s in specs if s.qtype == GGMLQuantizationType.Q6_K]
    assert len(q6) == 1 + 2 * 16  # output, and attn_v and ffn_down in 16 of the 32 layers
    assert 4.90e9 < sum(s.nbytes for s in specs) < 4.93e9  # Meta-Llama-3-8B Q4_K_M: 4.92 GB


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n_embd": 66}, "n_head"),
        ({"n_head_kv": 3}, "n_head_kv"),
        ({"n_layer": 0}, "n_layer"),
        ({"quant": "q5_x"}, "unknown quant"),
        ({"quant": "q4_k_m"}, "multiples of 256"),
        ({"rms_eps": 0.0}, "positive"),
        ({"vocab_size": 0}, "vocab_size"),
    ],
)
def test_bad_shapes_raise_usage_errors(change: dict[str, object], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        dataclasses.replace(synth.TINY, **change)  # type: ignore[arg-type]


def test_bad_vocabulary_sources_raise_model_errors(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        synth.write_synthetic_gguf(tmp_path / "m.gguf", synth.TINY, tmp_path / "missing.gguf")
    (tmp_path / "text.gguf").write_text("not a model")
    with pytest.raises(ModelError, match="not a readable GGUF"):
        synth.write_synthetic_gguf(tmp_path / "m.gguf", synth.TINY, tmp_path / "text.gguf")
    writer = GGUFWriter(tmp_path / "empty.gguf", "llama")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()
    with pytest.raises(TokenizerError, match=r"tokenizer\.ggml\.tokens"):
        synth.write_synthetic_gguf(tmp_path / "m.gguf", synth.TINY, tmp_path / "empty.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.gguf", "text.gguf"]


def test_writing_is_reproducible_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    def digest(name: str, seed: int) -> str:
        path = synth.write_synthetic_gguf(tmp_path / name, synth.TINY, seed=seed)
        return hashlib.sha256(path.read_bytes()).hexdigest()

    assert digest("a.gguf", 0) == digest("b.gguf", 0) != digest("c.gguf", 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "b.gguf", "c.gguf"]
    assert (tmp_path / "a.gguf").stat().st_size < 2_000_000


def models_synth(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "repoctx", "models", "synth", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_cli_writes_a_model_and_reports_bad_arguments(tmp_path: Path) -> None:
    out = tmp_path / "cli.gguf"
    done = models_synth(str(out), "--preset", "tiny", "--context-length", "8192")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"wrote {out} (")
    metadata = synth.read_metadata(out)
    assert metadata["llama.context_length"][0] == 8192
    assert metadata["llama.rope.freq_base"][0] == pytest.approx(3580165449.0)
    bad = models_synth(str(tmp_path / "bad.gguf"), "--preset", "tiny", "--quant", "q4_k_m")
    assert bad.returncode == 2 and "multiples of 256" in bad.stderr
    assert not (tmp_path / "bad.gguf").exists()

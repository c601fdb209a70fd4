"""Command line: `tiered-router [serve] --config FILE [--host H --port P]`, `eval`, `calibrate`, `pii-eval`,
`explain`."""

from __future__ import annotations

import os

# Before anything imports numpy: one BLAS/OpenMP thread. The router is one event loop per process (scale out with
# replicas); a BLAS thread pool per process only contends with the loop for the pod's CPU.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import yaml  # noqa: E402

from .config import DEFAULT_POLL_SECONDS  # noqa: E402


def _serve(args: argparse.Namespace) -> int:
    import signal

    from .server import build_service

    try:  # optional: uvloop makes the relay's event loop cheaper; plain asyncio works the same
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    service = build_service(Path(args.config), poll_seconds=args.poll_seconds, max_connections=args.max_connections)
    log = logging.getLogger("tiered_router")
    if service.holder.state is None:
        # Start anyway (readyz says why): a later valid ConfigMap update makes the router ready without a restart.
        log.error("starting without a valid config: %s", service.holder.last_error)
    # Everything loaded so far (modules, config, classifier data) lives as long as the process: move it out of the
    # collector's generations so full collections scan only what requests allocate (shorter p99 pauses).
    gc.collect()
    gc.freeze()
    log.info("event loop policy: %s", type(asyncio.get_event_loop_policy()).__module__)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        port = await service.start(args.host, args.port)
        log.info("listening on http://%s:%d", args.host, port)
        await stop.wait()
        log.info("stopping: requests in flight get up to 5 s")
        await service.stop(5.0)

    asyncio.run(run())
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import config_from_policy, evaluate, format_report, load_samples

    manifest = yaml.safe_load(Path(args.policy).read_text())
    config = config_from_policy(manifest)
    result = evaluate(config, load_samples(Path(args.data), args.split or None))
    print(json.dumps(result) if args.json else format_report(result))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from .classify import RouteClassifier
    from .encoders import load_encoder
    from .evaluate import calibration_report, config_from_policy, format_calibration, load_samples

    manifest = yaml.safe_load(Path(args.policy).read_text())
    config = config_from_policy(manifest)
    if config.classifier.default_threshold != "auto":  # show what auto would derive for this policy
        auto = config.classifier.model_copy(update={"default_threshold": "auto"})
        config = config.model_copy(update={"classifier": auto})
    clf = RouteClassifier(config, load_encoder(config.classifier.encoder))
    samples = load_samples(Path(args.data), args.split or None) if args.data else None
    report = calibration_report(clf, config, samples)
    print(json.dumps(report) if args.json else format_calibration(report))
    return 0


def _pii_eval(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config
    from .pii_eval import PiiEvalError, default_config, evaluate_pii, format_report, load_rows

    strict = {"auto": None, "on": True, "off": False}[args.strict]
    try:
        if args.config:
            config = load_config(Path(args.config).read_text())
            if strict is not None:
                pii = config.residency.pii.model_copy(update={"strict": strict})
                config = config.model_copy(update={"residency": config.residency.model_copy(update={"pii": pii})})
        else:
            config = default_config(args.namespace_class, strict)
        rows = load_rows(Path(args.data))
    except (ConfigError, PiiEvalError, OSError) as exc:
        print(f"tiered-router pii-eval: {exc}", file=sys.stderr)
        return 2
    result = evaluate_pii(rows, config)
    print(json.dumps(result, indent=1) if args.json else format_report(result))
    return 0


def _explain(args: argparse.Namespace) -> int:
    from .config import load_config
    from .explain import explain

    config = load_config(Path(args.config).read_text())
    print(json.dumps(explain(args.prompt, config, model=args.model, pinned_tier=args.tier), indent=2))
    return 0


def _at_least_one(text: str) -> int:
    number = int(text)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tiered-router", description="tiered's OpenAI-compatible routing proxy")
    sub = parser.add_subparsers(dest="command")
    serve = sub.add_parser("serve", help="serve the OpenAI-compatible API")
    for p in (parser, serve):
        p.add_argument("--log-level", default="INFO")
        p.add_argument("--config", help="router config file (the mounted ConfigMap key)")
        p.add_argument("--host", default="0.0.0.0")
        p.add_argument("--port", type=int, default=8080)
        p.add_argument("--poll-seconds", type=float, default=DEFAULT_POLL_SECONDS, help="config file check interval")
        p.add_argument("--max-connections", type=_at_least_one, default=1000,
                       help="open client connections per process; one more is answered 503 and closed")
    ev = sub.add_parser("eval", help="measure a RoutingPolicy's routes on labelled data")
    ev.add_argument("--policy", required=True, help="RoutingPolicy manifest (YAML)")
    ev.add_argument("--data", required=True, help="JSONL {text, route} or the healthcare-routing CSV")
    ev.add_argument("--split", default="test", help="CSV rows of this split ('' for all)")
    ev.add_argument("--json", action="store_true", help="print one JSON object")
    ca = sub.add_parser(
        "calibrate", help="the in-scope vs out-of-scope curve of a RoutingPolicy and its auto threshold"
    )
    ca.add_argument("--policy", required=True, help="RoutingPolicy manifest (YAML)")
    ca.add_argument("--data", help="also measure the curve on labelled data: JSONL {text, route} or the CSV")
    ca.add_argument("--split", default="test", help="CSV rows of this split ('' for all)")
    ca.add_argument("--json", action="store_true", help="print one JSON object")
    pe = sub.add_parser("pii-eval", help="measure the PII scan on labelled requests (JSONL; docs/residency.md)")
    pe.add_argument("--data", required=True, help="JSONL rows {body|messages|prompt|text, values: [{entity, ...}]}")
    pe.add_argument("--config", default=None, help="router config (default: restricted, all entities, keepLocal)")
    pe.add_argument("--namespace-class", default="restricted", choices=["restricted", "unrestricted", "local-only"])
    pe.add_argument("--strict", default="auto", choices=["auto", "on", "off"], help="auto: as the namespace implies")
    pe.add_argument("--json", action="store_true", help="print one JSON object")
    ex = sub.add_parser("explain", help="explain the decision for one prompt")
    ex.add_argument("--config", required=True)
    ex.add_argument("--model", default="auto")
    ex.add_argument("--tier", default=None, help="pin a tier, as the override header would")
    ex.add_argument("prompt")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(args, "log_level", "INFO").upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    if args.command == "eval":
        return _eval(args)
    if args.command == "calibrate":
        return _calibrate(args)
    if args.command == "explain":
        return _explain(args)
    if args.command == "pii-eval":
        return _pii_eval(args)
    if not args.config:
        build_parser().error("--config is required to serve")
    return _serve(args)


if __name__ == "__main__":
    sys.exit(main())

"""`python -m tiered_dev.demo up|down|status`."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from tiered_dev.demo import realnode
from tiered_dev.demo import up as demo


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tiered_dev.demo", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="control plane + demo state (default: $TIERED_DEV_DIR or .dev in the checkout)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start (or reuse) everything, send the workload, print the results")
    up.add_argument("--requests", type=int, default=160, help="workload size (default %(default)s)")
    up.add_argument("--concurrency", type=int, default=4, help="requests in flight (default %(default)s)")
    up.add_argument("--seed", type=int, default=7, help="workload sampling seed")
    up.add_argument("--lite", action="store_true",
                    help="router and SLM server as host processes, no real node (`make demo-lite`)")
    sub.add_parser("down", help="stop every process the demo started and the control plane")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    state_dir = args.state_dir or demo.env_state_dir()

    def out(line: str) -> None:
        print(line, flush=True)

    if args.command == "down":
        demo.down(state_dir, out)
        return 0
    try:
        run = demo.up if args.lite else realnode.up
        run(state_dir, requests=args.requests, concurrency=args.concurrency, seed=args.seed, out=out)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        detail = ""
        if isinstance(exc, subprocess.CalledProcessError):
            detail = f"\n{exc.stdout or ''}{exc.stderr or ''}".rstrip()
        print(f"\ndemo failed: {exc}{detail}", file=sys.stderr, flush=True)
        print(f"logs: {state_dir.resolve() / 'logs'}; stop everything with `make demo-down`", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

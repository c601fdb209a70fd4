"""`tiered dev build|up|down|status`: the local control plane, registered on the `tiered` CLI when this
development package is installed (it never is in the operator image)."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from tiered_dev import devcluster


def default_state_dir() -> Path:
    return Path(os.environ.get("TIERED_DEV_DIR", ".dev"))


def _dev_up(args: argparse.Namespace) -> int:
    from tiered_dev.devcluster.node import RealNodeError

    started = time.monotonic()
    try:
        cluster = devcluster.up(Path(args.state_dir), node_mode=args.node)
    except (devcluster.ComponentFailed, RealNodeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"control plane up in {time.monotonic() - started:.1f}s: {cluster.server}")
    if cluster.real_node:
        from tiered_dev.devcluster import node

        print(f"  real node:           {node.REAL_NODE} at {node.NODE_IP} (pods {node.POD_CIDR}, "
              f"services {node.SERVICE_CIDR}, DNS {node.CLUSTER_DNS}); KWOK node tainted "
              f"{node.KWOK_TAINT['key']}={node.KWOK_TAINT['value']}:{node.KWOK_TAINT['effect']}")
    print(f"  admin kubeconfig:    {cluster.kubeconfig}")
    if cluster.operator_kubeconfig.exists():
        print(f"  operator kubeconfig: {cluster.operator_kubeconfig}")
    print(f"  kubectl:             {cluster.kubectl_path}")
    return 0


def _dev_build(args: argparse.Namespace) -> int:
    from tiered_dev.devcluster.build import ensure_binaries, ensure_node_binaries

    print(ensure_binaries())
    if args.node == "real":
        print(ensure_node_binaries())
    return 0


def _dev_down(args: argparse.Namespace) -> int:
    from tiered_dev.devcluster.node import RealNodeError

    try:
        stopped = devcluster.down(Path(args.state_dir), progress=print)
    except RealNodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"stopped {len(stopped)} process(es)" + (f": {' '.join(map(str, stopped))}" if stopped else ""))
    return 0


def _dev_status(args: argparse.Namespace) -> int:
    running = devcluster.status(Path(args.state_dir))
    for name, alive in running.items():
        print(f"{name:26} {'running' if alive else 'stopped'}")
    return 0 if all(running.values()) else 3


def _dev_images(args: argparse.Namespace) -> int:
    from tiered_dev import images

    try:
        built = images.ensure_images(args.only.split(",") if args.only else None)
        if args.import_to:
            images.import_images(built.values(), args.import_to, namespace=args.namespace)
    except (images.ImageBuildError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(images.describe(built), end="")
    return 0


def add_dev_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `dev build|up|down|status` on the `tiered` parser."""
    dev = sub.add_parser("dev", help="the local control plane (etcd, kube-apiserver, controller-manager, "
                                     "scheduler, KWOK) as processes on 127.0.0.1")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True)
    for name, func, help_text in (
        ("build", _dev_build, "build (once) and cache the control-plane binaries; print their directory"),
        ("up", _dev_up, "build (once) and start the control plane; reuses what already runs"),
        ("down", _dev_down, "stop this control plane's processes (and its real node, undoing its host changes)"),
        ("status", _dev_status, "which components run"),
    ):
        cmd = dev_sub.add_parser(name, help=help_text)
        cmd.add_argument("--state-dir", default=str(default_state_dir()), help="where PKI, data and logs live")
        if name in ("build", "up"):
            cmd.add_argument("--node", choices=("kwok", "real"), default=None,
                             help="real: also a real node (containerd, kubelet, kube-proxy, CoreDNS, kube-router; "
                                  "one per machine) beside the KWOK node; default: what the state directory runs")
        cmd.set_defaults(func=func)
    images = dev_sub.add_parser(
        "images", help="build (or reuse) the operator, router, SLM and pause images without a container engine "
                       "(buildah; cached under ~/.cache/tiered/images); optionally import them into a containerd")
    images.add_argument("--only", default="", help="comma-separated subset of operator,router,slm,pause")
    images.add_argument("--import", dest="import_to", default="", metavar="SOCKET",
                        help="containerd socket to import the images into")
    images.add_argument("--namespace", default="k8s.io", help="containerd namespace (the CRI's is k8s.io)")
    images.set_defaults(func=_dev_images)

"""Turn what the operator wrote (the router ConfigMap, the tier's Deployment) into local processes.

There is no container runtime here: KWOK simulates the pods, and the demo runs the same programs the pods
would run as local processes. Everything they are configured with comes from the objects the operator wrote;
the only changes are the ones a pod network would otherwise provide, and each is reported:

- in the router config: a local tier's in-cluster Service URL becomes the SLM process's 127.0.0.1 port, and a
  cloud tier's key file path (a Secret volume in the pod) becomes a file holding the same Secret value;
- in the container arguments: host/port and the volume paths (PVC root, cache) become local paths;
  arguments the local programs do not know are left out and listed.

These functions are pure (no I/O), so the translation is easy to read and to test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tiered_router.config import RouterConfig, load_config, render_config


@dataclass(frozen=True)
class Translation:
    """A local command line or config, and every change made on the way (printed by the demo)."""

    value: Any
    changes: tuple[str, ...] = field(default=())


def local_router_config(
    config_text: str, local_urls: Mapping[str, str], key_files: Mapping[str, str]
) -> Translation:
    """The ConfigMap's router config with upstream addresses rewritten to local processes.

    `local_urls`: tier name → base URL of the process serving it; `key_files`: tier name → local file holding
    the key from the tier's Secret. Every other field is kept as the operator rendered it.
    """
    config: RouterConfig = load_config(config_text)
    changes: list[str] = []
    tiers = []
    for tier in config.tiers:
        update: dict[str, Any] = {}
        if tier.name in local_urls and local_urls[tier.name] != tier.base_url:
            update["base_url"] = local_urls[tier.name].rstrip("/")
            changes.append(f"tier {tier.name}: baseURL {tier.base_url} -> {update['base_url']}")
        if tier.api_key_file and tier.name in key_files:
            update["api_key_file"] = key_files[tier.name]
            changes.append(f"tier {tier.name}: apiKeyFile {tier.api_key_file} -> {key_files[tier.name]}")
        tiers.append(tier.model_copy(update=update) if update else tier)
    rewritten = config.model_copy(update={"tiers": tiers})
    # Round-trip through the router's own validation, exactly as the router will read the file.
    return Translation(render_config(load_config(render_config(rewritten))), tuple(changes))


def container(deployment: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """The named container of a Deployment's pod template (KeyError naming what exists)."""
    containers = deployment.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    for c in containers:
        if c.get("name") == name:
            return dict(c)
    raise KeyError(f"container {name!r} not in Deployment (has {[c.get('name') for c in containers]})")


def _split(args: Sequence[str]) -> list[tuple[str, str | None]]:
    """`--flag=value` / `--flag value` / positional → (flag or positional, value)."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--") and "=" in arg:
            flag, value = arg.split("=", 1)
            out.append((flag, value))
        elif arg.startswith("--") and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append((arg, args[i + 1]))
            i += 1
        else:
            out.append((arg, None))
        i += 1
    return out


# Operator's SLM container flags → `tiered-slm serve` flags (both spellings accepted, so the translation keeps
# working whichever side is renamed).
SLM_FLAGS: dict[str, str] = {
    "--model-source": "--model", "--model": "--model",
    "--model-name": "--model-id", "--model-id": "--model-id",
    "--context-length": "--ctx", "--ctx": "--ctx",
    "--sha256": "--sha256",
    "--quantize-on-load": "--quantize", "--quantize": "--quantize",
    "--speculative-tokens": "--draft-tokens", "--draft-tokens": "--draft-tokens",
    "--max-ngram-size": "--ngram", "--ngram": "--ngram",
    "--batch": "--batch", "--queue-size": "--queue-size", "--threads": "--threads",
}  # fmt: skip
SLM_INFORMATIONAL = {"--quantization"}
"""Flags that describe the model rather than configure the server (the file already holds that type)."""
SPECULATIVE_MODES = {"promptLookup": "prompt-lookup", "prompt-lookup": "prompt-lookup", "draft": "draft",
                     "off": "off"}
LOCAL_OVERRIDES = {"--host", "--port", "--pvc-root", "--cache-dir"}


def slm_argv(
    deployment: Mapping[str, Any], host: str, port: int, pvc_root: str, cache_dir: str, threads: int | None = None
) -> Translation:
    """`tiered-slm` arguments equivalent to the Deployment's model container, bound to a local port."""
    c = container(deployment, "model")
    args = list(c.get("args") or [])
    command = list(c.get("command") or [])
    out: list[str] = []
    changes: list[str] = []
    pairs = _split(args)
    if pairs and pairs[0] == ("serve", None):
        pairs = pairs[1:]
    for flag, value in pairs:
        if flag in LOCAL_OVERRIDES:
            continue
        if flag in ("--speculative-mode", "--speculative") and value is not None:
            mode = SPECULATIVE_MODES.get(value)
            if mode is None:
                changes.append(f"left out {flag}={value} (unknown speculative mode)")
            else:
                out += ["--speculative", mode]
            continue
        target = SLM_FLAGS.get(flag)
        if target is not None and value is not None:
            out += [target, value]
        elif flag in SLM_INFORMATIONAL:
            changes.append(f"{flag}={value} is informational (the model file already has that type)")
        else:
            changes.append(f"left out {flag}{'=' + value if value is not None else ''} (not a tiered-slm option)")
    out += ["--host", host, "--port", str(port), "--pvc-root", pvc_root, "--cache-dir", cache_dir]
    if threads is not None and "--threads" not in out:
        out += ["--threads", str(threads)]
    changes.append(f"listen on {host}:{port}; pvc:// volumes from {pvc_root}; cache in {cache_dir}")
    program = command or ["tiered-slm"]
    return Translation([*program, "serve", *out], tuple(changes))


ROUTER_FLAGS = {"--poll-seconds"}


def router_argv(deployment: Mapping[str, Any], config_path: str, host: str, port: int) -> Translation:
    """`tiered-router serve` arguments equivalent to the Deployment's router sidecar, bound to a local port."""
    c = container(deployment, "router")
    out: list[str] = []
    changes: list[str] = []
    for flag, value in _split(list(c.get("args") or [])):
        if flag in ("serve",):
            continue
        if flag == "--config":
            changes.append(f"--config {value} (the ConfigMap volume) -> {config_path} (same config, upstreams local)")
        elif flag in ("--host", "--port"):
            continue
        elif flag == "--metrics-port":
            changes.append(f"--metrics-port={value}: the local router serves /metrics on its API port")
        elif flag in ROUTER_FLAGS and value is not None:
            out += [flag, value]
        else:
            changes.append(f"left out {flag}{'=' + value if value is not None else ''} (not a tiered-router option)")
    program = list(c.get("command") or []) or ["tiered-router"]
    return Translation([*program, "serve", "--config", config_path, "--host", host, "--port", str(port), *out],
                       tuple(changes))

"""Cold and cached build times of the project's images (tiered_dev.images), with their sizes.

Builds everything into a fresh cache directory (TIERED_CACHE_DIR, so the machine's own cache is neither used nor
touched), base included, then calls ensure_images() again for the cached (no-op) time. pip's own cache stays the
machine's: the llama-cpp-python wheel comes from there, as it does after `make venv` on a clean clone.

    flock /tmp/tiered-bench.lock .venv/bin/python bench/images/build_times.py --out bench/images/build_times.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _uncompressed_bytes(archive: Path) -> int:
    """Sum of the layers' uncompressed sizes (the image's size on a node's disk, before snapshotter overhead)."""
    import gzip
    import tarfile

    total = 0
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        manifest_digest = index["manifests"][0]["digest"].split(":", 1)[1]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{manifest_digest}"))  # type: ignore[arg-type]
        for layer in manifest["layers"]:
            blob = tar.extractfile(f"blobs/sha256/{layer['digest'].split(':', 1)[1]}")
            assert blob is not None
            with gzip.open(blob) if layer["mediaType"].endswith("gzip") else blob as stream:
                while chunk := stream.read(1 << 20):
                    total += len(chunk)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--keep", action="store_true", help="keep the temporary cache directory")
    args = parser.parse_args()

    cache = Path(tempfile.mkdtemp(prefix="tiered-images-cold-", dir=os.environ.get("TMPDIR", "/var/tmp")))
    os.environ["TIERED_CACHE_DIR"] = str(cache)
    from tiered_dev import images  # after TIERED_CACHE_DIR: cache_root() reads it at each call anyway

    messages: list[tuple[float, str]] = []
    started = time.monotonic()

    def progress(message: str) -> None:
        messages.append((round(time.monotonic() - started, 1), message))
        print(f"{time.monotonic() - started:7.1f}s {message}", file=sys.stderr, flush=True)

    load_before = os.getloadavg()
    try:
        cold_started = time.monotonic()
        cold = images.ensure_images(progress=progress)
        cold_total = time.monotonic() - cold_started
        base_meta = json.loads(next((cache / "images" / "archives").glob("base-*.oci.json")).read_text())
        cached_started = time.monotonic()
        cached = images.ensure_images(progress=progress)
        cached_total = time.monotonic() - cached_started
        base_archive = next((cache / "images" / "archives").glob("base-*.oci.tar"))
        result = {
            "command": "flock /tmp/tiered-bench.lock .venv/bin/python bench/images/build_times.py --out ...",
            "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                     check=False).stdout.strip(),
            "cpus": os.cpu_count(),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "cold_total_seconds": round(cold_total, 1),
            "cached_total_seconds": round(cached_total, 3),
            "base": {"ref": base_meta["ref"], "cold_seconds": base_meta["build_seconds"],
                     "archive_bytes": base_archive.stat().st_size,
                     "uncompressed_bytes": _uncompressed_bytes(base_archive)},
            "images": {
                name: {
                    "ref": image.ref,
                    "cold_seconds": round(image.seconds, 1),
                    "cached_seconds": round(cached[name].seconds, 3),
                    "rebuilt_when_cached": cached[name].built,
                    "archive_bytes": image.archive_bytes,
                    "uncompressed_bytes": _uncompressed_bytes(image.archive),
                    "manifest_digest": image.manifest_digest,
                }
                for name, image in cold.items()
            },
            "progress": messages,
            "host_leftovers": images.host_leftovers(cache / "images"),
        }
    finally:
        if not args.keep:
            shutil.rmtree(cache, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "progress"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

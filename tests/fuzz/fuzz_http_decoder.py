"""Coverage-guided fuzzing (atheris, libFuzzer) of tiered_http's request body decoder (`_Decoder`), against the
standard decoders as a reference.

    python tests/fuzz/fuzz_http_decoder.py [libFuzzer flags] CORPUS_DIR [SEED_DIR ...]

Input format: byte 0 picks the coding (gzip, deflate, br), byte 1 how the coded stream is cut into pieces as a
request body would arrive (0: whole; n: pieces of 1 + (n % 97) bytes); the rest is the coded stream. Seeds:
tests/fuzz/corpus/decoder/.

A "crash" is any of: an exception other than tiered_http's HTTPError 400; a piece larger than INFLATE_STEP; a
stream the decoder accepts whole (its end reached, `finish` passing) that the reference (gzip.decompress,
zlib.decompress, brotli.decompress) refuses or decodes to other bytes.
"""

from __future__ import annotations

import gzip
import sys
import zlib

import atheris

with atheris.instrument_imports(include=["tiered_http"]):
    from tiered_http import HTTPError
    from tiered_http.server import INFLATE_STEP, _Decoder

CODINGS = ["gzip", "deflate", "br"] if _Decoder.supported("br") else ["gzip", "deflate"]
CAP = 1024 * 1024  # decoded bytes compared with the reference at most (a bomb stops here, as a handler would)


class Finding(AssertionError):
    """An invariant the decoder broke on this input."""


def reference(coding: str, data: bytes) -> bytes:
    if coding == "gzip":
        return gzip.decompress(data)
    if coding == "deflate":
        try:
            return zlib.decompress(data)
        except zlib.error:
            return zlib.decompress(data, -zlib.MAX_WBITS)
    import brotli

    return bytes(brotli.decompress(data))


def run(data: bytes) -> None:
    if len(data) < 2:
        return
    coding = CODINGS[data[0] % len(CODINGS)]
    step = 0 if data[1] == 0 else 1 + data[1] % 97
    stream = data[2:]
    pieces = [stream] if step == 0 else [stream[i : i + step] for i in range(0, len(stream), step)]
    decoder = _Decoder(coding)
    out: list[bytes] = []
    total = 0
    try:
        for piece in pieces:
            for part in decoder.feed(piece):
                if len(part) > INFLATE_STEP:
                    raise Finding(f"{coding}: a piece of {len(part)} bytes")
                if not part:
                    raise Finding(f"{coding}: an empty piece")
                out.append(part)
                total += len(part)
                if total > CAP:
                    return  # a handler stops here (its limit); nothing to compare
        decoder.finish()
    except HTTPError as exc:
        if exc.status != 400 or not exc.message.startswith(f"request body cannot be decoded: {coding}: "):
            raise Finding(f"{coding}: unexpected HTTPError {exc.status} {exc.message}") from exc
        return
    ours = b"".join(out)
    try:
        theirs = reference(coding, stream)
    except Exception as exc:
        raise Finding(f"{coding}: accepted a stream the reference refuses ({exc}); decoded {ours[:80]!r}") from exc
    if ours != theirs:
        raise Finding(f"{coding}: decoded {len(ours)} bytes, the reference {len(theirs)}")


def main() -> None:
    atheris.Setup(sys.argv, run)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

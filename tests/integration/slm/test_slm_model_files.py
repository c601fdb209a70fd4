"""Model files end to end: generated GGUFs load in every type, digests are enforced, quantize-on-load caches,
and https downloads resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from slm_helpers import TinyModels, finish_process, load, options, start_server_process

from tiered_slm.integrity import IntegrityError, file_sha256
from tiered_slm.model import prepare_model_file
from tiered_slm.quant import read_file_type
from tiered_slm.source import download_with_resume


@pytest.mark.parametrize("quant", ["F32", "Q8_0", "Q4_K_M"])
def test_each_quantization_loads_and_reports_its_type_size_and_load_time(
        tiny_models: TinyModels, quant: str) -> None:
    path = tiny_models.by_type()[quant]
    _engine, report = load(path)
    assert report.quantization == quant
    assert report.size_bytes == path.stat().st_size
    assert report.load_seconds > 0
    assert report.n_ctx == 1024 and report.n_vocab % 64 == 0


def test_quantized_files_are_smaller_in_the_expected_order(tiny_models: TinyModels) -> None:
    sizes = {quant: path.stat().st_size for quant, path in tiny_models.by_type().items()}
    assert sizes["F32"] > sizes["Q8_0"] > sizes["Q4_K_M"]


def test_sha256_match_is_accepted_and_mismatch_is_refused(tiny_models: TinyModels) -> None:
    good = file_sha256(tiny_models.q4_k_m)
    assert prepare_model_file(options(tiny_models.q4_k_m, sha256=good)).sha256 == good
    with pytest.raises(IntegrityError, match="expected 0{64}, got " + good):
        prepare_model_file(options(tiny_models.q4_k_m, sha256="0" * 64))


def test_server_refuses_to_start_on_sha256_mismatch_with_exit_code_3(tiny_models: TinyModels,
                                                                    tmp_path: Path) -> None:
    termination_log = tmp_path / "termination-log"
    termination_log.touch()
    server = start_server_process(["--model", str(tiny_models.q4_k_m), "--sha256", "0" * 64,
                                   "--cache-dir", str(tiny_models.q4_k_m.parent / "cache")],
                                  env={"TIERED_SLM_TERMINATION_LOG": str(termination_log)})
    code, log = finish_process(server)
    assert code == 3, log
    assert "refusing to start (exit code 3): model sha256 mismatch" in log
    assert file_sha256(tiny_models.q4_k_m) in log
    # What `kubectl describe pod` shows as the container's last state message.
    assert termination_log.read_text().startswith("exit code 3: model sha256 mismatch for ")


def test_quantize_on_load_quantizes_once_then_hits_the_cache(tiny_models: TinyModels, tmp_path: Path) -> None:
    first_engine, first = load(tiny_models.f32, quantize="Q4_K_M", cache_dir=tmp_path)
    assert (first.quantization, first.quantized_from, first.quantize_cache_hit) == ("Q4_K_M", "F32", False)
    cached = Path(first.path)
    assert cached.parent == tmp_path / "quantized" and cached.name.startswith(file_sha256(tiny_models.f32))
    mtime = cached.stat().st_mtime_ns
    del first_engine
    _engine, second = load(tiny_models.f32, quantize="Q4_K_M", cache_dir=tmp_path)
    assert second.quantize_cache_hit is True and second.path == first.path
    assert cached.stat().st_mtime_ns == mtime
    assert read_file_type(cached) == 15


def test_quantize_on_load_refuses_an_already_quantized_input(tiny_models: TinyModels, tmp_path: Path) -> None:
    from tiered_slm.quantize import QuantizeError

    with pytest.raises(QuantizeError, match="full-precision"):
        prepare_model_file(options(tiny_models.q8_0, quantize="Q4_K_M", cache_dir=tmp_path))


def test_make_test_model_command_writes_a_quantized_gguf(tmp_path: Path) -> None:
    out = tmp_path / "cli.gguf"
    result = subprocess.run([sys.executable, "-m", "tiered_slm", "make-test-model", str(out), "--quant", "Q4_K_M"],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert read_file_type(out) == 15 and "Q4_K_M" in result.stdout


async def test_https_download_resumes_with_a_range_request(tiny_models: TinyModels, tmp_path: Path) -> None:
    payload = tiny_models.q4_k_m.read_bytes()
    ranges: list[str | None] = []

    async def serve_model(request: web.Request) -> web.StreamResponse:
        ranges.append(request.headers.get("Range"))
        start = int(request.headers["Range"].removeprefix("bytes=").rstrip("-")) if "Range" in request.headers else 0
        response = web.StreamResponse(status=206 if start else 200)
        response.content_length = len(payload) - start
        if start:
            response.headers["Content-Range"] = f"bytes {start}-{len(payload) - 1}/{len(payload)}"
        await response.prepare(request)
        if len(ranges) == 1:
            # First attempt: send a third of the file, then drop the connection.
            await response.write(payload[: len(payload) // 3])
            assert request.transport is not None
            request.transport.close()
            return response
        await response.write(payload[start:])
        return response

    app = web.Application()
    app.router.add_get("/models/tiny.gguf", serve_model)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        import asyncio

        target = tmp_path / "dl" / "tiny.gguf"
        url = f"http://127.0.0.1:{server.port}/models/tiny.gguf"
        await asyncio.to_thread(download_with_resume, url, target, attempts=3, timeout_s=10)
    finally:
        await server.close()
    assert ranges[0] is None and ranges[1] == f"bytes={len(payload) // 3}-"
    assert target.read_bytes() == payload
    assert not target.with_name("tiny.gguf.part").exists()


def test_a_file_llama_cpp_cannot_load_exits_6_with_the_reason(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"GGUF" + bytes(64))
    server = start_server_process(["--model", str(bogus), "--cache-dir", str(tmp_path / "cache")])
    code, log = finish_process(server)
    assert code == 6, log
    assert "refusing to start (exit code 6): llama.cpp could not load" in log


async def test_probes_while_an_https_model_downloads_then_ready_after_verification(
        tiny_models: TinyModels, tmp_path: Path) -> None:
    import asyncio
    import signal

    import aiohttp

    payload = tiny_models.q4_k_m.read_bytes()
    release = asyncio.Event()

    async def slow_model(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), 30)
        return web.Response(body=payload)

    app = web.Application()
    app.router.add_get("/tiny.gguf", slow_model)
    files = TestServer(app, host="127.0.0.1", port=0)
    await files.start_server()
    server = await asyncio.to_thread(start_server_process, [
        "--model", f"http://127.0.0.1:{files.port}/tiny.gguf", "--sha256", file_sha256(tiny_models.q4_k_m),
        "--cache-dir", str(tmp_path / "cache")])
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
            async with http.get(f"{server.base_url}/healthz") as response:
                assert response.status == 200
            async with http.get(f"{server.base_url}/readyz") as response:
                assert response.status == 503 and (await response.json())["status"] == "loading"
            async with http.post(f"{server.base_url}/v1/completions", json={"prompt": "x"}) as response:
                assert response.status == 503 and response.headers["Retry-After"] == "5"
                assert (await response.json())["error"]["code"] == "model_not_ready"
            release.set()
            for _ in range(300):
                async with http.get(f"{server.base_url}/readyz") as response:
                    if response.status == 200:
                        break
                await asyncio.sleep(0.05)
            async with http.get(f"{server.base_url}/v1/models") as response:
                report = (await response.json())["data"][0]["tiered"]
        assert report["quantization"] == "Q4_K_M" and report["sha256"] == file_sha256(tiny_models.q4_k_m)
        assert report["source"].startswith("http://127.0.0.1:")
        server.process.send_signal(signal.SIGTERM)
        code, log = await asyncio.to_thread(finish_process, server)
        assert code == 0, log
    except BaseException:
        server.process.kill()
        raise
    finally:
        await files.close()

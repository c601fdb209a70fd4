"""Model source strings: what each scheme means and which ones are refused."""

import re
import sys
from pathlib import Path

import pytest

from tiered_slm.source import (
    ModelSource,
    ModelSourceError,
    download_cache_path,
    parse_source,
    pvc_path,
    resolve_source,
    resume_offset,
)


def test_plain_and_file_urls_are_local_paths() -> None:
    assert parse_source("/models/a.gguf") == ModelSource(kind="file", location="/models/a.gguf")
    assert parse_source("file:///models/a.gguf") == ModelSource(kind="file", location="/models/a.gguf")


def test_pvc_source_maps_to_the_claim_mount_under_the_pvc_root() -> None:
    source = parse_source("pvc://llm-weights/qwen/q4.gguf")
    assert (source.kind, source.location, source.path) == ("pvc", "llm-weights", "qwen/q4.gguf")
    assert pvc_path(source, Path("/models")) == Path("/models/llm-weights/qwen/q4.gguf")
    assert str(source) == "pvc://llm-weights/qwen/q4.gguf"


@pytest.mark.parametrize("text", ["pvc://claim/../etc/passwd", "pvc://claim/", "pvc:///abs", "pvc://claim//abs"])
def test_pvc_paths_that_escape_or_are_empty_are_refused(text: str) -> None:
    with pytest.raises(ModelSourceError):
        parse_source(text)


def test_hf_source_with_revision() -> None:
    source = parse_source("hf://Qwen/Qwen2.5-0.5B-Instruct-GGUF@main/qwen2.5-0.5b-instruct-q4_k_m.gguf")
    assert source.kind == "hf"
    assert source.location == "Qwen/Qwen2.5-0.5B-Instruct-GGUF"
    assert source.revision == "main"
    assert source.path == "qwen2.5-0.5b-instruct-q4_k_m.gguf"


def test_hf_source_needs_org_repo_and_file() -> None:
    with pytest.raises(ModelSourceError, match="hf://<org>/<repo>"):
        parse_source("hf://Qwen/only-repo")


def test_unknown_schemes_are_refused_with_the_supported_list() -> None:
    with pytest.raises(ModelSourceError, match="unsupported scheme 's3'"):
        parse_source("s3://bucket/model.gguf")


def test_https_sources_are_cached_by_url_hash_and_basename(tmp_path: Path) -> None:
    a = download_cache_path("https://a.example/m/model.gguf", tmp_path)
    b = download_cache_path("https://b.example/m/model.gguf", tmp_path)
    assert a != b and a.name.endswith("-model.gguf") and b.name.endswith("-model.gguf")


def test_resume_offset_accepts_a_matching_partial_response() -> None:
    assert resume_offset(206, "bytes 100-199/200", 100) == 100


def test_resume_offset_restarts_when_the_server_ignores_range() -> None:
    assert resume_offset(200, None, 100) == 0


def test_resume_offset_rejects_a_partial_response_at_the_wrong_offset() -> None:
    with pytest.raises(ModelSourceError):
        resume_offset(206, "bytes 50-199/200", 100)


def test_missing_local_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="no file at"):
        resolve_source(parse_source(str(tmp_path / "nope.gguf")), cache_dir=tmp_path)


def test_missing_pvc_file_hints_at_the_mount(tmp_path: Path) -> None:
    with pytest.raises(ModelSourceError, match="is the claim mounted"):
        resolve_source(parse_source("pvc://claim/m.gguf"), pvc_root=tmp_path, cache_dir=tmp_path)


def test_pvc_source_resolves_to_a_file_on_the_mount(tmp_path: Path) -> None:
    (tmp_path / "claim" / "dir").mkdir(parents=True)
    (tmp_path / "claim" / "dir" / "m.gguf").write_bytes(b"GGUF")
    resolved = resolve_source(parse_source("pvc://claim/dir/m.gguf"), pvc_root=tmp_path, cache_dir=tmp_path)
    assert resolved == tmp_path / "claim" / "dir" / "m.gguf"


def test_hf_source_without_huggingface_hub_says_what_to_install(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # import now raises ImportError
    with pytest.raises(ModelSourceError, match="needs the huggingface_hub package"):
        resolve_source(parse_source("hf://org/repo/m.gguf"), cache_dir=tmp_path)


def test_hf_source_is_served_from_the_hub_cache_when_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    commit = "a" * 40
    snapshot = tmp_path / "hf" / "models--org--repo" / "snapshots" / commit / "sub"
    snapshot.mkdir(parents=True)
    (snapshot / "m.gguf").write_bytes(b"GGUF")
    (tmp_path / "hf" / "models--org--repo" / "refs").mkdir()
    (tmp_path / "hf" / "models--org--repo" / "refs" / "main").write_text(commit)
    assert resolve_source(parse_source("hf://org/repo/sub/m.gguf"), cache_dir=tmp_path) == snapshot / "m.gguf"
    with pytest.raises(ModelSourceError, match=re.escape("could not fetch hf://org/repo/other.gguf")):
        resolve_source(parse_source("hf://org/repo/other.gguf"), cache_dir=tmp_path)


def test_expected_total_comes_from_content_range_or_length() -> None:
    from tiered_slm.source import expected_total

    assert expected_total(206, "bytes 100-199/200", "100", 100) == 200
    assert expected_total(200, None, "200", 0) == 200
    assert expected_total(200, None, None, 0) is None

"""tiered_dev.images: what the image cache key covers (and what it must not), and the names images get."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tiered_dev import images
from tiered_operator.settings import OperatorSettings

REPO = Path(__file__).resolve().parents[3]


def test_copy_sources_reads_every_context_copy_and_skips_stage_copies() -> None:
    text = """# comment
ARG PYTHON_IMAGE=python:3.11
FROM ${PYTHON_IMAGE} AS build
COPY a.txt b/ /dst/
COPY --chown=1:1 c \\
     d /x/
ADD ["e f", "/y/"]
COPY --from=build /opt/venv /opt/venv
# COPY commented /nowhere
RUN echo COPY not-an-instruction
"""
    assert images.copy_sources(text) == ["a.txt", "b/", "c", "d", "e f"]


def test_a_copy_source_with_a_variable_is_refused() -> None:
    with pytest.raises(ValueError, match="variable"):
        images.copy_sources("FROM x\nCOPY $SRC /dst\n")


@pytest.mark.parametrize(
    ("path", "ignored"),
    [
        ("operator/tiered_operator/__pycache__/x.cpython-311.pyc", True),
        ("tiered_http/__pycache__", True),
        ("a/b/c.pyc", True),
        (".venv/bin/python", True),
        ("operator/.venv/bin/python", False),  # `.venv` is anchored at the context root, as in Docker
        ("tiered.egg-info/PKG-INFO", True),
        ("operator/tiered_operator/settings.py", False),
        ("bench/out/x.json", True),
        ("bench/http/x.py", False),
    ],
)
def test_dockerignore_rules_match_as_docker_reads_them(path: str, ignored: bool) -> None:
    patterns = images.parse_ignore((REPO / ".dockerignore").read_text())
    assert images.is_ignored(path, patterns) is ignored


def _project(tmp_path: Path) -> Path:
    (tmp_path / "app" / "pkg").mkdir(parents=True)
    (tmp_path / "app" / "pkg" / "m.py").write_text("x = 1\n")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "n.py").write_text("y = 1\n")
    (tmp_path / ".dockerignore").write_text("**/__pycache__\n")
    (tmp_path / "Dockerfile").write_text("ARG PYTHON_IMAGE=p\nFROM ${PYTHON_IMAGE}\nCOPY app /app\n")
    return tmp_path


def _key(root: Path, base: str = "base-1") -> str:
    recipe = images.Recipe("thing", "example.org/thing:1", "Dockerfile")
    return images.recipe_key(recipe, root, base=base)[0]


def test_the_key_follows_copied_files_the_dockerfile_and_the_base_and_nothing_else(tmp_path: Path) -> None:
    root = _project(tmp_path)
    first = _key(root)
    assert _key(root) == first

    (root / "other" / "n.py").write_text("y = 2\n")  # not copied
    (root / "app" / "pkg" / "__pycache__").mkdir()
    (root / "app" / "pkg" / "__pycache__" / "m.cpython-311.pyc").write_bytes(b"\0")  # ignored
    assert _key(root) == first

    (root / "app" / "pkg" / "m.py").write_text("x = 2\n")
    second = _key(root)
    assert second != first

    (root / "app" / "pkg" / "new.py").write_text("")
    third = _key(root)
    assert third != second

    (root / "app" / "pkg" / "new.py").chmod(0o755)
    assert _key(root) != third

    assert _key(root, base="base-2") != _key(root)
    (root / "Dockerfile").write_text("ARG PYTHON_IMAGE=p\nFROM ${PYTHON_IMAGE}\nCOPY app /srv/app\n")
    assert _key(root) != third


def test_a_missing_copy_source_is_an_error_not_an_empty_hash(tmp_path: Path) -> None:
    root = _project(tmp_path)
    (root / "Dockerfile").write_text("FROM scratch\nCOPY missing /x\n")
    with pytest.raises(FileNotFoundError, match="missing"):
        _key(root)


@pytest.mark.parametrize("name", ["operator", "router", "slm"])
def test_each_dockerfile_builds_from_the_python_image_argument_and_copies_existing_files(name: str) -> None:
    recipe = images.recipes(REPO)[name]
    text = (REPO / recipe.dockerfile).read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11[\w.\-]*-slim-bookworm$", text, re.M), \
        "docker users keep the public python image as the default base"
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(f == "${PYTHON_IMAGE}" for f in froms), froms
    assert re.search(r"\bpython -m venv\b", text) is None, "Debian's interpreter is python3 (no `python`)"
    _, _, files = images.recipe_inputs(recipe, REPO)
    assert files
    assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]


def test_the_slm_image_gets_the_host_wheel_and_its_key_follows_it() -> None:
    recipe = images.recipes(REPO)["slm"]
    assert recipe.host_wheels == ("llama-cpp-python",)
    one = images.recipe_key(recipe, REPO, base="base-1", wheels_digest="a")[0]
    assert images.recipe_key(recipe, REPO, base="base-1", wheels_digest="b")[0] != one


def test_the_pause_key_follows_its_source_and_compiler() -> None:
    recipe = images.recipes(REPO)["pause"]
    one = images.recipe_key(recipe, REPO, base="base-1", compiler="gcc 12")[0]
    assert images.recipe_key(recipe, REPO, base="base-2", compiler="gcc 12")[0] == one  # FROM scratch
    assert images.recipe_key(recipe, REPO, base="base-1", compiler="gcc 13")[0] != one


def test_the_base_key_follows_its_containerfile() -> None:
    text = (REPO / images.BASE_CONTAINERFILE).read_text()
    assert images.base_key(text) == images.base_key(text)
    assert images.base_key(text + "\n# changed\n") != images.base_key(text)
    assert images.base_ref(images.base_key(text)).startswith("localhost/tiered/base:")


def test_images_get_exactly_the_names_the_operator_writes() -> None:
    refs = images.image_refs(REPO)
    settings = OperatorSettings()
    assert refs["slm"] == settings.slm_image
    assert refs["router"] == settings.router_image
    docs = list(yaml.safe_load_all((REPO / images.OPERATOR_MANIFEST).read_text()))
    (deployment,) = [d for d in docs if d and d["kind"] == "Deployment"]
    assert refs["operator"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert refs["pause"] == images.PAUSE_IMAGE


def test_an_operator_manifest_without_the_operator_container_is_an_error() -> None:
    manifest = "apiVersion: apps/v1\nkind: Deployment\nspec: {template: {spec: {containers: [{name: x, image: y}]}}}\n"
    with pytest.raises(ValueError, match="operator"):
        images.operator_image_ref(manifest)


def test_the_host_llama_cpp_flags_are_the_makefiles() -> None:
    makefile = (REPO / "Makefile").read_text()
    match = re.search(r"^export CMAKE_ARGS \?= (.+)$", makefile, re.M)
    assert match is not None
    assert match.group(1).strip() == images.CMAKE_ARGS


def test_pruning_keeps_the_most_recently_used_archives_of_each_image(tmp_path: Path) -> None:
    import os

    for age, key in enumerate(["e", "d", "c", "b", "a"]):  # "e" is the newest
        archive = tmp_path / f"slm-{key}.oci.tar"
        archive.write_bytes(b"")
        archive.with_suffix(".json").write_text("{}")
        os.utime(archive, (1000 - age, 1000 - age))
    (tmp_path / "router-z.oci.tar").write_bytes(b"")
    images._prune_older(tmp_path, "slm", keep=tmp_path / "slm-a.oci.tar")
    left = sorted(p.name for p in tmp_path.glob("*.oci.tar"))
    assert left == ["router-z.oci.tar", "slm-a.oci.tar", "slm-d.oci.tar", "slm-e.oci.tar"]
    assert sorted(p.name for p in tmp_path.glob("slm-*.json")) == ["slm-a.oci.json", "slm-d.oci.json", "slm-e.oci.json"]


def test_the_host_ca_bundle_is_offered_where_no_package_writes(tmp_path: Path) -> None:
    """Over the base's own bundle, the read-only mount made ca-certificates' postinst fail in `apt-get upgrade`."""
    bundle = tmp_path / "host.crt"
    assert images.trust_volumes(bundle, tmp_path) == []
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    volumes = [v.split(":") for v in images.trust_volumes(bundle, tmp_path)]
    assert [(source, mode) for source, _, mode in volumes] == [(str(bundle), "ro"), (str(tmp_path / "pip.conf"), "ro")]
    targets = [target for _, target, _ in volumes]
    assert targets == [images.BUILD_CA_BUNDLE, "/etc/pip.conf"]
    assert not targets[0].startswith(("/etc/ssl/", "/usr/"))
    assert f"cert = {images.BUILD_CA_BUNDLE}" in (tmp_path / "pip.conf").read_text()

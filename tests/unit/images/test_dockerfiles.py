"""Every Dockerfile in the repository: COPY sources exist, the entrypoint exists, non-root, pinned bases."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from dockerfile_rules import (
    Project,
    all_problems,
    build_context,
    copy_sources,
    entrypoint_problems,
    final_user_problems,
    missing_copy_sources,
    parse,
    portability_problems,
    unpinned_bases,
)

from tiered_dev import images

REPO = Path(__file__).resolve().parents[3]
EXPECTED_DOCKERFILES = ("operator/Dockerfile", "router_image/Dockerfile", "slm_image/Dockerfile")
_SKIP_DIRS = {".venv", ".dev", ".git", "node_modules", "build", "dist"}


def _repo_dockerfiles() -> list[Path]:
    """Every Dockerfile (Dockerfile, Dockerfile.*, *.Dockerfile) outside virtualenvs and build outputs."""
    found: list[Path] = []
    for directory, subdirs, files in os.walk(REPO):
        subdirs[:] = [d for d in subdirs if d not in _SKIP_DIRS and not d.startswith(".")]
        found.extend(Path(directory) / name for name in files if "Dockerfile" in name)
    return sorted(found)


DOCKERFILES = _repo_dockerfiles()


def test_each_image_has_a_dockerfile() -> None:
    relative = {str(p.relative_to(REPO)) for p in DOCKERFILES}
    assert set(EXPECTED_DOCKERFILES) <= relative, f"missing: {set(EXPECTED_DOCKERFILES) - relative}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: str(p.relative_to(REPO)))
def test_dockerfile_builds_from_the_repository_and_runs_as_non_root(dockerfile: Path) -> None:
    assert all_problems(dockerfile, Project.load(REPO)) == []


def test_build_context_comes_from_the_documented_command(tmp_path: Path) -> None:
    (tmp_path / "router_image").mkdir()
    in_subdir = tmp_path / "router_image" / "Dockerfile"
    in_subdir.write_text("# Build:  docker build -t tiered-router router_image/\nFROM python:3.11.11-slim\n")
    assert build_context(in_subdir, tmp_path) == (tmp_path / "router_image").resolve()
    at_root = tmp_path / "op.Dockerfile"
    at_root.write_text("FROM python:3.11.11-slim\n")
    assert build_context(at_root, tmp_path) == tmp_path


def test_a_documented_command_that_builds_another_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "router_image").mkdir()
    dockerfile = tmp_path / "router_image" / "Dockerfile"
    dockerfile.write_text("# docker build -t x .\nFROM python:3.11.11-slim\nUSER 1\n")
    problems = all_problems(dockerfile, Project(root=tmp_path, console_scripts={}))
    assert any("does not build" in p for p in problems)


# --- each rule fires on a bad Dockerfile ----------------------------------------------------------------------


def _project(tmp_path: Path) -> Project:
    package = tmp_path / "operator" / "tiered_operator"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "__main__.py").write_text("def main() -> None:\n    pass\n")
    (package / "cli.py").write_text("")
    return Project(
        root=tmp_path,
        console_scripts={"tiered-operator": "tiered_operator.__main__:main", "tiered": "tiered_operator.cli:main"},
    )


GOOD = """
ARG PY=3.11.11
FROM python:${PY}-slim-bookworm AS build
COPY operator/ /src/operator/
FROM python:3.11.11-slim-bookworm
COPY --from=build /opt/venv /opt/venv
USER 65532:65532
ENTRYPOINT ["tiered-operator"]
"""


def test_a_good_dockerfile_passes(tmp_path: Path) -> None:
    project = _project(tmp_path)
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(GOOD)
    assert all_problems(dockerfile, project) == []


@pytest.mark.parametrize(
    ("base", "fragment"),
    [("python", "no tag"), ("python:latest", ":latest"), ("ghcr.io/org/img:$TAG", "ARG without a default")],
)
def test_unpinned_base_images_are_reported(base: str, fragment: str) -> None:
    problems = unpinned_bases(parse(f"FROM {base}\nUSER 1000\n"))
    assert len(problems) == 1 and fragment in problems[0]


def test_digest_pinned_and_stage_references_are_accepted() -> None:
    text = f"FROM python@sha256:{'a' * 64} AS base\nFROM base\nUSER 1\n"
    assert unpinned_bases(parse(text)) == []


def test_a_copy_source_missing_from_the_repository_is_reported(tmp_path: Path) -> None:
    stages = parse("FROM python:3.11.11-slim\nCOPY operator/ does-not-exist.txt /app/\nUSER 1\n")
    _project(tmp_path)
    problems = missing_copy_sources(stages, tmp_path)
    assert len(problems) == 1 and "does-not-exist.txt" in problems[0]


@pytest.mark.parametrize(
    ("user_lines", "fragment"),
    [("", "no USER"), ("USER root\n", "numeric UID"), ("USER 0:0\n", "root"), ("USER app\n", "numeric UID")],
)
def test_root_or_unverifiable_users_are_reported(user_lines: str, fragment: str) -> None:
    text = f"FROM python:3.11.11-slim\nUSER 1000\nFROM python:3.11.11-slim\n{user_lines}"
    problems = final_user_problems(parse(text))
    assert len(problems) == 1 and fragment in problems[0]


@pytest.mark.parametrize(
    ("entrypoint", "fragment"),
    [
        ('ENTRYPOINT ["tiered-routr"]', "neither a console script"),
        ('CMD ["python", "-m", "tiered_operator.missing"]', "no such module"),
        ("ENTRYPOINT tiered", "defines no main"),
        ("", "neither ENTRYPOINT nor CMD"),
    ],
)
def test_entrypoints_that_name_nothing_in_the_repository_are_reported(
    tmp_path: Path, entrypoint: str, fragment: str
) -> None:
    problems = entrypoint_problems(parse(f"FROM python:3.11.11-slim\nUSER 1\n{entrypoint}\n"), _project(tmp_path))
    assert len(problems) == 1 and fragment in problems[0]


def test_the_operator_image_copies_no_development_code() -> None:
    """The demo and the local cluster live in tiered_dev, which no image may contain (nor the whole checkout)."""
    copied = [source for _line, source in copy_sources(parse((REPO / "operator/Dockerfile").read_text()))]
    assert copied, "the operator Dockerfile copies nothing"
    for source in copied:
        path = (REPO / source).resolve()
        assert path != REPO, f"COPY {source} would put the whole checkout (tiered_dev included) in the image"
        assert not path.is_relative_to(REPO / "tiered_dev"), f"COPY {source} puts development code in the image"
    assert not list((REPO / "operator").rglob("demo")) and not list((REPO / "operator").rglob("devcluster"))


PINNED = "FROM python:3.11.11-slim-bookworm\n"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (PINNED + "RUN --mount=type=cache,target=/root/.cache pip install x\n", "RUN --mount is BuildKit-only"),
        (PINNED + "COPY --chmod=755 a /a\n", "COPY --chmod is BuildKit-only"),
        (PINNED + "COPY --link a /a\n", "COPY --link is BuildKit-only"),
        (PINNED + "RUN <<EOF\necho hi\nEOF\n", "heredoc in RUN"),
        ("# syntax=docker/dockerfile:1\n" + PINNED, "parser directive"),
        (PINNED + "ONBUILDX true\n", "ONBUILDX is not a Dockerfile instruction"),
    ],
)
def test_syntax_one_builder_lacks_is_reported(text: str, fragment: str) -> None:
    assert any(fragment in problem for problem in portability_problems(text)), portability_problems(text)


def test_the_standard_syntax_passes() -> None:
    text = ("# A comment that mentions syntax=nothing\nARG BASE=python:3.11.11-slim-bookworm\n"
            "FROM --platform=linux/amd64 ${BASE} AS build\nRUN echo a \\\n && echo b\n"
            "FROM ${BASE}\nCOPY --from=build --chown=1:1 /a /a\nADD --chown=1:1 b /b\n"
            "HEALTHCHECK --interval=5s --timeout=1s CMD true\nUSER 1:1\nENTRYPOINT [\"/a\"]\n")
    assert portability_problems(text) == []


@pytest.mark.parametrize("containerfile", [images.BASE_CONTAINERFILE, f"{images.PAUSE_DIR}/Containerfile"])
def test_the_engine_free_builds_own_files_use_only_standard_syntax(containerfile: str) -> None:
    assert portability_problems((REPO / containerfile).read_text()) == []


@pytest.mark.parametrize("name", ["operator", "router", "slm"])
def test_buildah_builds_the_very_files_docker_users_build(name: str) -> None:
    """`make images` hands buildah the repository's Dockerfile and the context its documented `docker build`
    command uses; the one difference is the PYTHON_IMAGE build argument, which each file declares for that."""
    recipe = images.recipes(REPO)[name]
    dockerfile = REPO / recipe.dockerfile
    assert recipe.dockerfile in EXPECTED_DOCKERFILES
    context = (REPO / recipe.context).resolve()
    assert context == build_context(dockerfile, REPO)
    build_args = images.build_args_for(recipe, "base-0123456789abcdef")
    argv = images.bud_args(context, dockerfile, recipe.ref, build_args, ["/host/wheels:/wheels:ro"])
    assert argv[0] == "bud" and argv[-1] == str(context)
    assert argv[argv.index("-f") + 1] == str(dockerfile)
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--build-arg"] == [
        f"PYTHON_IMAGE={images.base_ref('base-0123456789abcdef')}"]
    assert "ARG PYTHON_IMAGE=" in dockerfile.read_text().split("FROM", 1)[0]
    documented = (REPO / "docs" / "images.md").read_text()
    assert f"docker build -f {recipe.dockerfile}" in " ".join(documented.split()), "docs/images.md must show it"

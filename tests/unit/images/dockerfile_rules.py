"""Static checks of the project's Dockerfiles, for a repository whose CI has no container engine.

No image can be built here, so the mistakes that would only surface in `docker build` or at pod start are caught
by reading the Dockerfile: a COPY of a path that does not exist, an entrypoint that names nothing the image
installs, a root user (Pod Security "restricted" rejects it), an unpinned base image (builds stop being
reproducible). The build context is the one in the `docker build` command the Dockerfile's header comment
documents (the repository root when it documents none), and COPY sources are resolved against it.

Each rule is a pure function from a parsed Dockerfile (plus what it needs to know about the repo) to a list of
problems, so the unit tests can prove each rule fires on a bad Dockerfile.
"""

from __future__ import annotations

import ast
import glob
import json
import re
import shlex
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

PYTHON_PACKAGE_ROOTS = ("operator", "router_image", "slm_image")
"""Where setuptools finds the packages (pyproject.toml [tool.setuptools.packages.find] where)."""


@dataclass(frozen=True)
class Instruction:
    """One Dockerfile instruction: its keyword, its flags (--from=..., --chown=...) and its arguments."""

    keyword: str
    flags: dict[str, str]
    args: list[str]
    exec_form: bool
    line: int


@dataclass
class Stage:
    """One FROM ... block."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join backslash continuations and drop comments, keeping the starting line number."""
    lines: list[tuple[int, str]] = []
    current: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):
            continue
        if not current:
            start = number
        if stripped.endswith("\\"):
            current.append(stripped[:-1])
            continue
        current.append(stripped)
        lines.append((start, " ".join(part.strip() for part in current)))
        current = []
    if current:
        lines.append((start, " ".join(current)))
    return lines


def _substitute(value: str, args: dict[str, str]) -> str:
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), value)


def parse(text: str) -> list[Stage]:
    """The stages of a Dockerfile, with ARG defaults declared before the first FROM substituted into FROM."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line_no, line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        flags: dict[str, str] = {}
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        exec_form = rest.startswith("[")
        args = json.loads(rest) if exec_form else shlex.split(rest)
        if keyword == "ARG" and not stages:
            arg_name, _, default = rest.partition("=")
            global_args[arg_name.strip()] = default.strip().strip('"')
            continue
        if keyword == "FROM":
            base = _substitute(args[0], global_args)
            stage_name = str(args[2]) if len(args) >= 3 and args[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=stage_name))
            continue
        if not stages:
            raise ValueError(f"line {line_no}: {keyword} before the first FROM")
        stages[-1].instructions.append(Instruction(keyword, flags, args, exec_form, line_no))
    if not stages:
        raise ValueError("no FROM instruction")
    return stages


STANDARD_INSTRUCTIONS = frozenset({
    "FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER", "WORKDIR", "ARG",
    "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL",
})
"""The instructions of the Dockerfile reference, which Docker's classic builder, BuildKit and buildah all read."""

PORTABLE_FLAGS = {
    "FROM": {"platform"},
    "COPY": {"from", "chown"},
    "ADD": {"chown"},
    "HEALTHCHECK": {"interval", "timeout", "start-period", "retries"},
}
"""Instruction flags every builder understands. BuildKit-only ones (RUN --mount/--network/--security, COPY --link,
--chmod, --parents, --exclude) would make the file build with one tool and not another."""


def portability_problems(text: str) -> list[str]:
    """Whatever would tie the file to one builder: a non-standard instruction, a BuildKit-only flag, a heredoc,
    or a `# syntax=` parser directive (BuildKit then pulls that frontend image from a registry first)."""
    problems = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            break
        if re.match(r"#\s*syntax\s*=", stripped, re.IGNORECASE):
            problems.append(f"parser directive {stripped!r} makes BuildKit fetch a frontend image")
    for line_no, line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword not in STANDARD_INSTRUCTIONS:
            problems.append(f"line {line_no}: {keyword} is not a Dockerfile instruction")
            continue
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            rest = rest.strip()
            name = flag[2:].partition("=")[0]
            if name not in PORTABLE_FLAGS.get(keyword, set()):
                problems.append(f"line {line_no}: {keyword} {flag.partition('=')[0]} is BuildKit-only")
        if keyword in ("RUN", "COPY", "ADD") and re.search(r"<<-?[\"']?\w+", rest):
            problems.append(f"line {line_no}: a heredoc in {keyword} is BuildKit-only")
    return problems


# --- rules --------------------------------------------------------------------------------------------------------


def unpinned_bases(stages: list[Stage]) -> list[str]:
    """FROM images without an explicit tag or digest, or tagged :latest (earlier stages and scratch excepted)."""
    problems = []
    stage_names = {s.name for s in stages if s.name}
    for stage in stages:
        image = stage.base
        if image in stage_names or image == "scratch":
            continue
        if "@sha256:" in image:
            continue
        last = image.rsplit("/", 1)[-1]
        tag = last.partition(":")[2]
        if not tag:
            problems.append(f"FROM {image}: no tag or digest (pin a version such as python:3.11.11-slim-bookworm)")
        elif tag == "latest":
            problems.append(f"FROM {image}: ':latest' is not a pinned version")
        elif "$" in tag:
            problems.append(f"FROM {image}: the tag comes from an ARG without a default")
    return problems


def copy_sources(stages: list[Stage]) -> list[tuple[int, str]]:
    """(line, source) of every COPY/ADD that reads from the build context (not --from another stage/image)."""
    sources = []
    for stage in stages:
        for ins in stage.instructions:
            if ins.keyword not in ("COPY", "ADD") or "from" in ins.flags:
                continue
            for source in ins.args[:-1]:
                sources.append((ins.line, source))
    return sources


def missing_copy_sources(stages: list[Stage], context: Path) -> list[str]:
    """COPY/ADD sources that match nothing in the build context."""
    problems = []
    for line, source in copy_sources(stages):
        if re.match(r"^[a-z]+://", source):
            problems.append(f"line {line}: ADD from a URL ({source}) is not reproducible; vendor the file")
            continue
        if not glob.glob(str(context / source.lstrip("/"))):
            problems.append(f"line {line}: COPY source {source!r} does not exist in {context}")
    return problems


def final_user_problems(stages: list[Stage]) -> list[str]:
    """The final stage must switch to a numeric, non-zero UID (the kubelet can only verify runAsNonRoot then)."""
    users = [ins.args[0] for ins in stages[-1].instructions if ins.keyword == "USER" and ins.args]
    if not users:
        return ["the final stage sets no USER, so the image runs as root"]
    uid = users[-1].partition(":")[0]
    if not uid.isdigit():
        return [f"USER {users[-1]}: use a numeric UID (e.g. 65532) so the kubelet can verify runAsNonRoot"]
    if int(uid) == 0:
        return [f"USER {users[-1]}: UID 0 is root"]
    return []


def entrypoint_argv(stages: list[Stage]) -> list[str]:
    """The command the image starts: the final stage's last ENTRYPOINT, else its last CMD (shell form split)."""
    for keyword in ("ENTRYPOINT", "CMD"):
        found = [ins for ins in stages[-1].instructions if ins.keyword == keyword]
        if found:
            return list(found[-1].args)
    return []


@dataclass(frozen=True)
class Project:
    """What the entrypoint rule needs to know about the repository."""

    root: Path
    console_scripts: dict[str, str]

    @classmethod
    def load(cls, root: Path) -> Project:
        pyproject = tomllib.loads((root / "pyproject.toml").read_text())
        return cls(root=root, console_scripts=dict(pyproject["project"].get("scripts", {})))

    def module_file(self, module: str) -> Path | None:
        """The source file of a module of this repository's packages, if it exists."""
        parts = module.split(".")
        for package_root in PYTHON_PACKAGE_ROOTS:
            base = self.root / package_root / Path(*parts)
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file():
                    return candidate
        return None


def _defines_function(path: Path, name: str) -> bool:
    tree = ast.parse(path.read_text())
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name for node in tree.body
    ) or any(
        isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names)
        for node in tree.body
    )


def _console_script_problems(project: Project, script: str) -> list[str]:
    target = project.console_scripts[script]
    module, _, function = target.partition(":")
    path = project.module_file(module)
    if path is None:
        return [f"console script {script} -> {target}: module {module} does not exist in the repository"]
    if function and not _defines_function(path, function.split(".")[0]):
        return [f"console script {script} -> {target}: {path.relative_to(project.root)} defines no {function}"]
    return []


def _copied_destinations(stages: list[Stage]) -> set[str]:
    return {ins.args[-1] for ins in stages[-1].instructions if ins.keyword in ("COPY", "ADD")}


def entrypoint_problems(stages: list[Stage], project: Project) -> list[str]:
    """The start command must be a console script declared in pyproject.toml (whose target exists),
    `python -m <module of this repo>`, or a file the final stage copies in."""
    argv = entrypoint_argv(stages)
    if not argv:
        return ["the final stage has neither ENTRYPOINT nor CMD"]
    command = argv[0]
    if command in project.console_scripts:
        return _console_script_problems(project, command)
    if Path(command).name in ("python", "python3") and len(argv) >= 3 and argv[1] == "-m":
        if project.module_file(argv[2]) is None and project.module_file(f"{argv[2]}.__main__") is None:
            return [f"python -m {argv[2]}: no such module in the repository"]
        return []
    if command in _copied_destinations(stages):
        return []
    return [
        f"entrypoint {command!r} is neither a console script in pyproject.toml "
        f"({', '.join(sorted(project.console_scripts))}), `python -m` of a repository module, "
        "nor a file the final stage COPYs in"
    ]


def documented_build_command(dockerfile: Path) -> list[str] | None:
    """The first `docker build ...` command written in the Dockerfile's comments, split into arguments."""
    for line in dockerfile.read_text().splitlines():
        if line.lstrip().startswith("#") and "docker build" in line:
            return shlex.split(line[line.index("docker build"):])
    return None


def build_context(dockerfile: Path, repo: Path) -> Path:
    """The documented command's context (its last argument, relative to the repository root), else the root."""
    argv = documented_build_command(dockerfile)
    return (repo / argv[-1]).resolve() if argv else repo


def context_problems(dockerfile: Path, repo: Path) -> list[str]:
    """The documented command must build this file: `-f <this file>`, or this file is <context>/Dockerfile."""
    argv = documented_build_command(dockerfile)
    if argv is None:
        return []
    context = (repo / argv[-1]).resolve()
    if not context.is_dir():
        return [f"documented build context {argv[-1]!r} is not a directory of the repository"]
    named = repo / argv[argv.index("-f") + 1] if "-f" in argv else context / "Dockerfile"
    if named.resolve() != dockerfile.resolve():
        return [f"the documented command `{' '.join(argv)}` does not build {dockerfile} (use -f)"]
    return []


def all_problems(dockerfile: Path, project: Project) -> list[str]:
    """Every rule applied to one Dockerfile, with COPY sources resolved in its documented build context."""
    stages = parse(dockerfile.read_text())
    return [
        *portability_problems(dockerfile.read_text()),
        *context_problems(dockerfile, project.root),
        *unpinned_bases(stages),
        *missing_copy_sources(stages, build_context(dockerfile, project.root)),
        *final_user_problems(stages),
        *entrypoint_problems(stages, project),
    ]

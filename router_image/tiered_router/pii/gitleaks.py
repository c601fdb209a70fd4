"""Convert gitleaks' published rule file (config/gitleaks.toml, MIT licence) into the token rules the router reads
(pii/data/secret_rules.json): `python -m tiered_router.pii.gitleaks path/to/gitleaks.toml`.

Only rules whose token starts with a literal vendor prefix are kept (`ghp_`, `xoxb-`, `AKIA`, `glpat-`, `sk_live_`,
...): the router finds candidate tokens first and then needs to know, from a token's first characters, which rules can
apply. Rules that key on a nearby vendor *name* (`twilio ... = "..."`) are left out: the router's own context words and
strict mode's high-entropy rule cover that shape for every vendor at once.

Go's RE2 syntax is translated where Python's `re` differs: a flag group `(?i)` in the middle of a pattern becomes a
scoped `(?i:...)` up to the end of its group, `[[:alnum:]]` becomes `[A-Za-z0-9]`, and `\\z` becomes `\\Z`. A rule that
still does not compile is skipped and listed on stderr.
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any

RULES_PATH = Path(__file__).parent / "data" / "secret_rules.json"


def translate(regex: str) -> str:
    """An RE2 pattern as Python `re` reads it (see the module docstring)."""
    regex = regex.replace("[[:alnum:]]", "[A-Za-z0-9]").replace("[:alnum:]", "A-Za-z0-9").replace("\\z", "\\Z")
    out: list[str] = []
    closers: list[int] = []  # depth at which an inserted "(?i:" must be closed
    depth = 0
    i = 0
    in_class = False
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            out.append(regex[i : i + 2])
            i += 2
            continue
        if in_class:
            in_class = c != "]"
            out.append(c)
            i += 1
            continue
        if c == "[":
            in_class = True
            out.append(c)
            if regex[i + 1 : i + 2] == "]":  # a literal ']' first in the class
                out.append("]")
                i += 1
            i += 1
            continue
        if regex.startswith("(?i)", i) and i > 0:
            out.append("(?i:")
            closers.append(depth)
            i += 4
            continue
        if c == "(":
            depth += 1
        elif c == ")":
            while closers and closers[-1] == depth:
                out.append(")")
                closers.pop()
            depth -= 1
        out.append(c)
        i += 1
    out.extend(")" for _ in closers)
    return "".join(out)


_LEADING = re.compile(r"^(?:\\b|\(\?i\)|\(\?:|\()*")
_LITERAL = re.compile(r"(?:[A-Za-z0-9_\-~]|\\\.)+")


def _alternatives(body: str) -> tuple[list[str], str] | None:
    """The top-level alternatives of the group `body` starts inside (after its '('), and the text after it."""
    depth, start, parts, in_class, i = 0, 0, [], False, 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
        elif c == "(":
            depth += 1
        elif c == ")":
            if depth == 0:
                parts.append(body[start:i])
                return parts, body[i + 1 :]
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(body[start:i])
            start = i + 1
        i += 1
    return None


def _literal_start(alternative: str) -> str:
    m = _LITERAL.match(alternative)
    if not m:
        return ""
    prefix = m.group(0)
    if alternative[m.end() : m.end() + 1] in ("{", "?", "*", "+"):
        prefix = prefix[:-1]  # the quantifier binds to the last character only
    return prefix.replace("\\.", ".")


def literal_prefixes(regex: str) -> list[str]:
    """The literal text every match starts with, one per alternative (`(?:A3T[A-Z0-9]|AKIA)...` -> [A3T, AKIA]);
    [] when some alternative can start with a character class."""
    lead = _LEADING.match(regex)
    body = regex[lead.end() :] if lead else regex
    opened = lead is not None and lead.group(0).endswith(("(?:", "(")) and not lead.group(0).endswith("(?i)")
    if opened:
        split = _alternatives(body)
        if split is not None and len(split[0]) > 1:
            alternatives, rest = split
            prefixes = [_literal_start(a) for a in alternatives]
            if not all(prefixes):
                return []
            if all(p == a for p, a in zip(prefixes, alternatives, strict=True)):  # whole alternatives are literal
                prefixes = [p + _literal_start(rest) for p in prefixes]
            return prefixes
    prefix = _literal_start(body)
    return [prefix] if prefix else []


def distinctive(prefix: str) -> bool:
    """A prefix that by itself marks a token as a credential: it holds a digit or one of `_-.~`, or is 4+
    characters with a capital letter (AKIA, LTAI). Plain words (`curl`) are not."""
    return any(not c.isalpha() for c in prefix) or (len(prefix) >= 4 and any(c.isupper() for c in prefix))


def convert(config: dict[str, Any], source: str) -> dict[str, Any]:
    rules = []
    skipped = []
    for rule in config.get("rules", []):
        regex = rule.get("regex")
        keywords = [k.lower() for k in rule.get("keywords", [])]
        if not regex or not keywords:
            continue
        python = translate(regex)
        try:
            re.compile(python)
        except re.error as exc:
            skipped.append(f"{rule['id']}: {exc}")
            continue
        prefixes = literal_prefixes(python)
        # keep prefix rules only: each prefix must be (case-insensitively) one of the rule's keywords or start with one
        if not prefixes or not all(len(p) >= 2 and distinctive(p) for p in prefixes):
            continue
        if not any(p.lower().startswith(k) or k.startswith(p.lower()) for p in prefixes for k in keywords):
            continue
        rules.append({"id": rule["id"], "prefixes": prefixes, "regex": python})
    for line in skipped:
        print(f"skipped {line}", file=sys.stderr)
    return {
        "source": source,
        "licence": "MIT (gitleaks, https://github.com/gitleaks/gitleaks/blob/master/LICENSE)",
        "generated_by": "python -m tiered_router.pii.gitleaks <gitleaks.toml>",
        "rules": rules,
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tiered_router.pii.gitleaks path/to/gitleaks.toml", file=sys.stderr)
        return 2
    path = Path(argv[0])
    config = tomllib.loads(path.read_text())
    data = convert(config, f"gitleaks config/gitleaks.toml (minVersion {config.get('minVersion', '?')})")
    RULES_PATH.write_text(json.dumps(data, indent=1) + "\n")
    print(f"{len(data['rules'])} rules written to {RULES_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

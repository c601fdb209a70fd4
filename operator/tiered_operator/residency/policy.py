"""A Namespace's residency policy, read from its labels (and annotations), as one value.

Kubernetes label values cannot contain commas, so `tiered.dev/allowed-regions` as a *label* lists regions
separated by `_` or `.` (`eu-west-1_eu-central-1`); the same key as an *annotation* may use commas
(`eu-west-1,eu-central-1`). Region names only contain `[a-z0-9-]`, so every separator is unambiguous. When
both are set, only regions listed in both are allowed (the stricter reading wins).

Invalid values fail closed: an unknown residency class is treated as local-only, so a typo in a compliance label
can never open egress.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from tiered_operator import labels
from tiered_router.config import ResidencyClass

_REGION_SEPARATORS = re.compile(r"[,_.\s]+")
_REGION = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class NamespacePolicy:
    """What a namespace allows: its residency class and, optionally, the cloud regions it accepts."""

    residency: ResidencyClass = ResidencyClass.RESTRICTED
    allowed_regions: frozenset[str] | None = None
    """None: the label is absent and any region is accepted; empty: no cloud region is accepted."""
    residency_label: str | None = None
    """The raw `tiered.dev/residency` value (None when absent), quoted back in messages."""
    regions_source: str | None = None
    """The raw allowed-regions text as found (label and/or annotation), quoted back in messages."""
    problems: tuple[str, ...] = field(default=())
    """Label values that could not be read; each says how it was interpreted (always the stricter way)."""

    @property
    def residency_source(self) -> str:
        """How the class was decided, for messages: `tiered.dev/residency=local-only` or `... (label absent)`."""
        if self.residency_label is None:
            return f"{labels.LABEL_RESIDENCY} absent (default {labels.RESIDENCY_DEFAULT})"
        return f"{labels.LABEL_RESIDENCY}={self.residency_label}"

    @property
    def residency_label_invalid(self) -> bool:
        """The residency label is set to something that is not a residency class (read as local-only)."""
        return self.residency_label is not None and self.residency_label.strip() not in labels.RESIDENCY_CLASSES

    def region_allowed(self, region: str | None) -> bool:
        """True when a cloud tier in `region` may serve this namespace (ignores the residency class)."""
        if self.allowed_regions is None:
            return True
        return region is not None and region in self.allowed_regions

    def fingerprint(self) -> str:
        """A short stable text of the effective policy: equal fingerprints mean equal decisions."""
        regions = "*" if self.allowed_regions is None else ",".join(sorted(self.allowed_regions))
        return f"{self.residency.value};{regions}"


def parse_regions(text: str) -> tuple[frozenset[str], list[str]]:
    """Regions in `text` (any of `, _ .` or whitespace between them) and the tokens that are not region names."""
    tokens = [t for t in _REGION_SEPARATORS.split(text.strip().lower()) if t]
    good = frozenset(t for t in tokens if _REGION.match(t))
    bad = [t for t in tokens if not _REGION.match(t)]
    return good, bad


def namespace_policy(
    ns_labels: Mapping[str, str] | None, ns_annotations: Mapping[str, str] | None = None
) -> NamespacePolicy:
    """Read a Namespace's residency policy from its labels (and the allowed-regions annotation).

    Absent residency label = restricted (DESIGN.md). Unknown value = local-only (fail closed).
    """
    ns_labels = ns_labels or {}
    ns_annotations = ns_annotations or {}
    problems: list[str] = []

    raw = ns_labels.get(labels.LABEL_RESIDENCY)
    if raw is None:
        residency = ResidencyClass.RESTRICTED
    else:
        try:
            residency = ResidencyClass(raw.strip())
        except ValueError:
            residency = ResidencyClass.LOCAL_ONLY
            problems.append(
                f"{labels.LABEL_RESIDENCY}={raw!r} is not one of {', '.join(labels.RESIDENCY_CLASSES)}; "
                "treated as local-only"
            )

    allowed: frozenset[str] | None = None
    sources: list[str] = []
    for kind, mapping in (("label", ns_labels), ("annotation", ns_annotations)):
        text = mapping.get(labels.LABEL_ALLOWED_REGIONS)
        if text is None:
            continue
        regions, bad = parse_regions(text)
        sources.append(f"{labels.LABEL_ALLOWED_REGIONS}={text} ({kind})")
        if bad:
            problems.append(
                f"{kind} {labels.LABEL_ALLOWED_REGIONS} has entries that are not region names: "
                f"{', '.join(bad)}; they allow nothing"
            )
        allowed = regions if allowed is None else allowed & regions

    return NamespacePolicy(
        residency=residency,
        allowed_regions=allowed,
        residency_label=raw,
        regions_source="; ".join(sources) or None,
        problems=tuple(problems),
    )

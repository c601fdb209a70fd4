"""Building blocks shared by both kinds: the model base class, cross-field rules, checked strings, conditions.

Why rules are objects: a cross-field constraint is written ONCE as a `CelRule` (CEL for the API server, a Python
predicate for `model_validate`, one message for both), so the operator and the API server reject the same
objects with the same words.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, model_validator
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

# ---------------------------------------------------------------------------------------------------------------
# Cross-field rules
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CelRule:
    """One cross-field constraint, evaluated by the API server (CEL) and by pydantic (`check`).

    `field_path` (relative, e.g. ``.defaultTier``) makes the API server report the error on that field;
    `reason` picks the API server's error wording ("Required value", "Forbidden"). FieldValueDuplicate is left out
    on purpose: the API server prints it without the message.
    """

    rule: str
    message: str
    check: Callable[[Any], bool]
    field_path: str | None = None
    reason: Literal["FieldValueInvalid", "FieldValueRequired", "FieldValueForbidden"] | None = None

    def to_schema(self) -> dict[str, str]:
        """The `x-kubernetes-validations` entry for this rule."""
        entry = {"rule": self.rule, "message": self.message}
        if self.field_path:
            entry["fieldPath"] = self.field_path
        if self.reason:
            entry["reason"] = self.reason
        return entry


def _add_cel_rules(schema: dict[str, Any], cls: type[Any]) -> None:
    rules: tuple[CelRule, ...] = getattr(cls, "cel_rules", ())
    if rules:
        schema["x-kubernetes-validations"] = [r.to_schema() for r in rules]


class ApiModel(BaseModel):
    """Base of every spec/status model: camelCase on the wire, unknown fields rejected, rules enforced."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        json_schema_extra=_add_cel_rules,
        validate_default=False,
    )

    cel_rules: ClassVar[tuple[CelRule, ...]] = ()

    @model_validator(mode="after")
    def _enforce_cel_rules(self) -> Self:
        for rule in type(self).cel_rules:
            if not rule.check(self):
                raise ValueError(rule.message)
        return self

    def to_k8s(self) -> dict[str, Any]:
        """The wire form: camelCase keys, unset optional fields left out, datetimes as RFC 3339 strings."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# ---------------------------------------------------------------------------------------------------------------
# Checked strings: one regex, one message, used by pydantic and (as a CEL rule) by the API server
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckedStr:
    """`Annotated[str, CheckedStr(...)]`: a string checked by one rule with one human message on both sides.

    A plain JSON-schema `pattern` makes the API server answer "should match '^…$'"; a CEL rule lets us say what
    was expected instead. `check` is the Python twin of `cel`.
    """

    cel: str
    message: str
    max_length: int
    check: Callable[[str], bool]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def validate(value: str) -> str:
            if not self.check(value):
                raise ValueError(self.message)
            return value

        return core_schema.no_info_after_validator_function(
            validate, core_schema.str_schema(max_length=self.max_length)
        )

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["x-kubernetes-validations"] = [{"rule": self.cel, "message": self.message}]
        return json_schema


@dataclass(frozen=True)
class OneOf:
    """`Annotated[str, OneOf(values)]`: an enum whose values live in a table elsewhere (a `Literal` would have to
    repeat them). Pydantic checks membership; the CRD gets a plain `enum`."""

    values: tuple[str, ...]

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        allowed = frozenset(self.values)

        def validate(value: str) -> str:
            if value not in allowed:
                raise ValueError(f"{value!r} is not one of {', '.join(self.values)}")
            return value

        return core_schema.no_info_after_validator_function(validate, core_schema.str_schema())

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "enum": list(self.values)}


def matching(pattern: str, message: str, max_length: int) -> CheckedStr:
    """A CheckedStr for a regular expression.

    The pattern must stay inside the RE2 ∩ Python `re` subset and contain no backslash or quote (use character
    classes such as `[.]`), because it is embedded in a CEL string literal and CEL's `matches` is RE2.
    """
    if "\\" in pattern or "'" in pattern:
        raise ValueError(f"pattern {pattern!r} must not contain backslashes or single quotes")
    if not (pattern.startswith("^") and pattern.endswith("$")):
        raise ValueError(f"pattern {pattern!r} must be anchored with ^...$ (CEL matches() searches)")
    compiled = re.compile(pattern)
    return CheckedStr(
        cel=f"self.matches('{pattern}')",
        message=message,
        max_length=max_length,
        check=lambda value: compiled.fullmatch(value) is not None,
    )


USD_DECIMAL_PATTERN = "^[0-9]{1,9}([.][0-9]{1,6})?$"
USDAmount = Annotated[
    str,
    matching(
        USD_DECIMAL_PATTERN,
        'must be a non-negative amount of US dollars written as a decimal string, e.g. "2.50" '
        "(at most 6 decimal places)",
        max_length=16,
    ),
]
"""Money in spec: a decimal string (API conventions avoid floats), read with `Decimal(value)`."""

DNS_LABEL_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNSLabel = Annotated[
    str,
    matching(
        DNS_LABEL_PATTERN,
        "must be a lowercase RFC 1123 label: a-z, 0-9 and '-', starting and ending with a letter or digit",
        max_length=63,
    ),
]
DNS_SUBDOMAIN_PATTERN = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNSSubdomain = Annotated[
    str,
    matching(
        DNS_SUBDOMAIN_PATTERN,
        "must be a lowercase RFC 1123 subdomain: a-z, 0-9, '-' and '.', starting and ending with a letter or digit",
        max_length=253,
    ),
]

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
Quantity = int | Annotated[str, Field(pattern=QUANTITY_PATTERN, max_length=64)]
"""A Kubernetes resource quantity: an integer or a string such as "500m", "2Gi" (x-kubernetes-int-or-string)."""


def require_unique(values: list[Any]) -> list[Any]:
    """AfterValidator for lists the CRD marks `x-kubernetes-list-type: set` (the API server rejects duplicates)."""
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"duplicate entry {v!r}: entries must be unique")
        seen.add(v)
    return values


def usd(value: str | None) -> Decimal:
    """Read a USDAmount (absent = 0)."""
    return Decimal(value) if value is not None else Decimal(0)


# ---------------------------------------------------------------------------------------------------------------
# Shared sub-objects
# ---------------------------------------------------------------------------------------------------------------

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """One observation of the object's state, per Kubernetes API conventions (metav1.Condition)."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(
        description="Condition type in CamelCase, e.g. Ready, Available, ModelReady, SLOMet, Stalled.",
        pattern="^([a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
        "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        max_length=316,
    )
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(
        description="Machine-readable CamelCase reason for the last transition, e.g. MetricsUnavailable.",
        pattern="^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
        min_length=1,
        max_length=1024,
    )
    message: str = Field(default="", description="Human-readable details about the last transition.", max_length=32768)
    last_transition_time: datetime = Field(description="When the condition last changed status (RFC 3339).")
    observed_generation: int | None = Field(
        default=None,
        ge=0,
        description="The .metadata.generation the condition was computed from; older than the object's "
        "generation means the condition is stale.",
    )


class SecretKeyRef(ApiModel):
    """A key in a Secret in the same namespace as the object referring to it."""

    name: DNSSubdomain = Field(description="Name of the Secret (same namespace).")
    key: str = Field(
        default="api-key",
        description="Key inside the Secret's data holding the value.",
        pattern="^[-._a-zA-Z0-9]+$",
        max_length=253,
    )


class ResourceRequirements(ApiModel):
    """Compute resources for a container, as in a Pod spec (cpu, memory, nvidia.com/gpu, ...)."""

    requests: dict[str, Quantity] | None = Field(
        default=None, description='Minimum resources, e.g. {cpu: "2", memory: 4Gi}.'
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, description='Maximum resources, e.g. {memory: 6Gi, "nvidia.com/gpu": 1}.'
    )


class Toleration(ApiModel):
    """Lets pods schedule onto nodes with a matching taint (e.g. dedicated edge or GPU nodes)."""

    key: str | None = Field(default=None, max_length=316, description="Taint key; empty with Exists matches all.")
    operator: Literal["Exists", "Equal"] = Field(default="Equal", description="Exists or Equal.")
    value: str | None = Field(default=None, max_length=63, description="Taint value for Equal.")
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = Field(
        default=None, description="Taint effect to match; empty matches all effects."
    )
    toleration_seconds: int | None = Field(
        default=None, ge=0, description="For NoExecute: how long the pod stays bound after the taint appears."
    )


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads; everything else is kept as-is."""

    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)

    name: str | None = None
    namespace: str | None = None
    uid: str | None = None
    generation: int | None = None
    resource_version: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None

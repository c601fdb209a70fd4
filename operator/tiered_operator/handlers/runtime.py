"""The per-process collaborators handlers share, kept in kopf's `memo`."""

from __future__ import annotations

from typing import Any

import kopf

from tiered_operator.handlers.reconciler import Reconciler


def reconciler(memo: Any) -> Reconciler:
    """The Reconciler the startup handler put into `memo`."""
    found = getattr(memo, "reconciler", None)
    if not isinstance(found, Reconciler):
        raise kopf.TemporaryError("operator is still starting", delay=1)
    return found

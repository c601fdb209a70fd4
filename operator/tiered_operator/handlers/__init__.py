"""kopf handlers. Importing this package registers every handler of the operator with kopf.

Each module is imported explicitly (not discovered), so a newcomer sees here everything the operator reacts to.
"""

from tiered_operator.handlers import (
    autoscale,
    children,
    indexes,
    policies,
    residency,
    startup,
    tiers,
)

__all__ = ["autoscale", "children", "indexes", "policies", "residency", "startup", "tiers"]

"""kopf handlers. Importing this package registers every handler of the operator with kopf.

Each module is imported explicitly (not discovered), so a newcomer sees here everything the operator reacts to.
"""

from tiered_operator.handlers import (
    admission,
    autoscale,
    children,
    indexes,
    namespaces,
    policies,
    startup,
    tiers,
)

__all__ = ("admission", "autoscale", "children", "indexes", "namespaces", "policies", "startup", "tiers")

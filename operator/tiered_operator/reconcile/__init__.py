"""Pure desired-state builders: custom resources in, manifests and status out, no I/O.

`handlers/` observes the cluster, calls these functions, applies the difference and writes status.
"""

"""`make demo`: the whole system on one machine — control plane, operator, data plane, Prometheus, a cloud
stand-in and a mixed workload — with every printed figure measured from the running processes.

Entry point: `python -m tiered_dev.demo up|down` (see docs/demo.md).
"""

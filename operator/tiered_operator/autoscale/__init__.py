"""SLO-driven autoscaling and the budget loop: pure decisions, PromQL, and a thin Prometheus query layer.

`algorithm.desired_replicas` decides, `promql` says what is asked, `prometheus` asks, `tierstatus` maps spec and
decisions to status, `budget` does the money. The kopf wiring lives in `tiered_operator.handlers.autoscale`;
docs/autoscaling.md explains the rule and shows every query.
"""

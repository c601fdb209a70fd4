"""The local control plane that stands in for a cluster on machines without a container engine."""

from tiered_dev.devcluster.cluster import Cluster, ComponentFailed, down, node_mode, status, stop_component, up

__all__ = ["Cluster", "ComponentFailed", "down", "node_mode", "status", "stop_component", "up"]

"""The three-node RabbitMQ cluster of the chaos tier (the mechanics live in `saga_tools.rabbit_cluster`,
shared with the benchmark)."""

from saga_tools.rabbit_cluster import RabbitCluster, RabbitNode, rabbitmqctl, stop_orphaned_clusters

__all__ = ["RabbitCluster", "RabbitNode", "rabbitmqctl", "stop_orphaned_clusters"]

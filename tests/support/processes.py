"""The services as real processes (the mechanics live in `saga_tools.localstack`, shared with the benchmark)."""

from saga_tools.localstack import LOG_DIR, ServiceProcess, free_port

__all__ = ["LOG_DIR", "ServiceProcess", "free_port"]

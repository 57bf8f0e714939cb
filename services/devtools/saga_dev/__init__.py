"""The development harness: `make run` (devrun), throwaway databases and vhosts and service processes
(localstack), a three-node RabbitMQ cluster on one host (rabbit_cluster) and the benchmark (bench).
Tests, the benchmark and `make run` share it; no image carries it."""

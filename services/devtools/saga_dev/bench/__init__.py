"""saga-bench: how many sagas a second the system carries, how long a customer waits, and how that
compares with what this machine's PostgreSQL and RabbitMQ can do without the services."""

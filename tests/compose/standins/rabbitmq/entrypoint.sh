#!/bin/sh
# Writes rabbitmq.conf as the official image does (guest allowed from any host, the management UI on 15672)
# and binds every listener to RABBITMQ_LISTEN_ADDRESS (default all addresses): on a host network shared with
# another RabbitMQ, the AMQP, management and distribution listeners, and epmd (ERL_EPMD_ADDRESS, set alongside),
# all stay on an address of their own. Then runs the server in the foreground (Debian's wrapper switches to the
# rabbitmq user).
set -eu
address="${RABBITMQ_LISTEN_ADDRESS:-}"
{
    echo "loopback_users.guest = false"
    if [ -n "$address" ]; then
        echo "listeners.tcp.1 = $address:5672"
        echo "management.tcp.ip = $address"
    else
        echo "listeners.tcp.default = 5672"
    fi
    echo "management.tcp.port = 15672"
} >/etc/rabbitmq/rabbitmq.conf
if [ -n "$address" ]; then
    erlang_address=$(echo "$address" | tr . ,)
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {$erlang_address}"
fi
chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
exec "$@"

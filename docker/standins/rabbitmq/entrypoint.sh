#!/bin/sh
# As the official image's entrypoint, for what docker/compose.yaml and the chart rely on. Without a
# rabbitmq.conf of the user's (compose mounts none; the chart mounts its ConfigMap on /etc/rabbitmq), it writes
# the official image's defaults: guest allowed from any host, the management UI on 15672, and every listener on
# RABBITMQ_LISTEN_ADDRESS (default all addresses) so that, on a host network shared with another RabbitMQ, the
# AMQP, management and distribution listeners and epmd (ERL_EPMD_ADDRESS, set alongside) keep to an address
# of their own. Started as root it owns the data to rabbitmq and drops to it; as uid 999 it changes nothing.
set -eu
address="${RABBITMQ_LISTEN_ADDRESS:-}"
if [ ! -e /etc/rabbitmq/rabbitmq.conf ]; then
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
    [ -e /etc/rabbitmq/enabled_plugins ] || printf '[rabbitmq_management,rabbitmq_prometheus].\n' >/etc/rabbitmq/enabled_plugins
fi
if [ -n "$address" ]; then
    erlang_address=$(echo "$address" | tr . ,)
    export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {$erlang_address}"
fi
if [ "$(id -u)" = 0 ]; then
    mkdir -p /var/lib/rabbitmq /var/log/rabbitmq
    chown -R rabbitmq:rabbitmq /var/lib/rabbitmq /var/log/rabbitmq
    exec setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups "$@"
fi
exec "$@"

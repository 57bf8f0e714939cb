#!/bin/sh
# The credentials of the plain manifests (k8s/saga.yaml refers to these Secrets and carries none).
# Prints eight Secrets with fresh random passwords, as YAML, for kubectl:
#
#   kubectl create namespace saga
#   sh k8s/create-secrets.sh | kubectl apply -f -
#
# Run it once per namespace: the databases keep the password they were first started with.
# The Helm chart does the same by itself (and keeps the passwords across upgrades).
set -eu

NAMESPACE=${NAMESPACE:-saga}
CLUSTER_DOMAIN=${CLUSTER_DOMAIN:-cluster.local}
RELEASE=saga
RABBITMQ_NODES=3

# 32 letters and digits: safe in URLs as they are.
random() {
    LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 32
}

# secret NAME KEY=VALUE...
secret() {
    name=$1
    shift
    printf -- '---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: %s\n  namespace: %s\n' "$name" "$NAMESPACE"
    printf '  labels:\n    app.kubernetes.io/part-of: saga\ntype: Opaque\ndata:\n'
    for pair in "$@"; do
        printf '  %s: %s\n' "${pair%%=*}" "$(printf '%s' "${pair#*=}" | base64 | tr -d '\n')"
    done
}

# broker_urls USER PASSWORD: one URL per RabbitMQ node, the services fail over between them.
broker_urls() {
    urls=""
    node=0
    while [ "$node" -lt "$RABBITMQ_NODES" ]; do
        host="$RELEASE-rabbitmq-$node.$RELEASE-rabbitmq-headless.$NAMESPACE.svc.$CLUSTER_DOMAIN"
        urls="${urls:+$urls,}amqp://$1:$2@$host:5672/"
        node=$((node + 1))
    done
    printf '%s' "$urls"
}

# service KEY DATABASE_USER DATABASE_NAME
service() {
    database_password=$(random)
    service_database_password=$(random)
    rabbitmq_password=$(random)
    database_host="$RELEASE-$1-db.$NAMESPACE.svc.$CLUSTER_DOMAIN:5432"
    # The owner runs the migrations; the service connects as <owner>_service, granted data access only.
    secret "$RELEASE-$1-service-credentials" \
        "database-password=$database_password" \
        "migration-database-url=postgresql://$2:$database_password@$database_host/$3" \
        "service-database-password=$service_database_password" \
        "database-url=postgresql://$2_service:$service_database_password@$database_host/$3" \
        "rabbitmq-password=$rabbitmq_password" \
        "rabbitmq-url=$(broker_urls "$1-service" "$rabbitmq_password")"
    # The database superuser's own password, read by the database pod only: the owner is no superuser.
    secret "$RELEASE-$1-db-credentials" "superuser-password=$(random)"
}

service order order orders
service customer customer customers
secret "$RELEASE-rabbitmq-credentials" "erlang-cookie=$(random)" "admin-password=$(random)"
secret "$RELEASE-grafana-credentials" "admin-password=$(random)"
# The development token signer (no identity provider; development only): the services mount the certificate,
# from a Secret of its own; `helm test`-like clients mint tokens with the key (sagactl token), in another Secret no
# service mounts. With a real identity provider, set auth.issuer/jwksUrl instead.
signer=$(mktemp -d)
openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=saga-dev-token-signer \
    -keyout "$signer/key.pem" -out "$signer/cert.pem" 2>/dev/null
secret "$RELEASE-token-signer-credentials" "signing-key.pem=$(cat "$signer/key.pem")"
secret "$RELEASE-token-verifier-credentials" "certificate.pem=$(cat "$signer/cert.pem")"
rm -rf "$signer"

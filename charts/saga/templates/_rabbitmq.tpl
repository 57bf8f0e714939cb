{{/*
The RabbitMQ ConfigMap's data (also hashed into the pods' checksum/config annotation): the server
configuration, the plugins, the definitions template and the script that fills in the password hashes.
*/}}
{{- define "saga.rabbitmq.configData" -}}
{{- $admin := .Values.rabbitmq.adminUsername }}
{{- $users := list (dict "name" $admin "password_hash" (printf "@%s@" $admin) "hashing_algorithm" "rabbit_password_hashing_sha256" "tags" (list "administrator")) }}
{{- $vhostName := .Values.rabbitmq.vhost }}
{{- $permissions := list (dict "user" $admin "vhost" $vhostName "configure" ".*" "write" ".*" "read" ".*") }}
{{- $services := list }}
{{- $topicPermissions := list }}
{{- $exchanges := list }}
{{- $queues := list }}
{{- $bindings := list }}
{{- /* The saga's topology, as saga_common.topology declares it: the routing keys each service consumes, and
the ones it publishes (the other's). A contract test holds these against the code. */}}
{{- $consumes := dict "order-service" (list "order.fulfilled" "order.rejected" "credit.released") "customer-service" (list "order.created" "order.cancelled") }}
{{- $publishes := dict "order-service" (get $consumes "customer-service") "customer-service" (get $consumes "order-service") }}
{{- $sagaExchange := "" }}
{{- range $key := include "saga.serviceKeys" . | splitList " " }}
{{- $svc := include "saga.service" (dict "root" $ "key" $key) | fromJson }}
{{- $services = append $services $svc }}
{{- $users = append $users (dict "name" $svc.name "password_hash" (printf "@%s@" $svc.name) "hashing_algorithm" "rabbit_password_hashing_sha256" "tags" (list)) }}
{{- $settings := $svc.settings | default dict }}
{{- $exchange := get $settings "SAGA_EXCHANGE" | default "saga.events" }}
{{- if and $sagaExchange (ne $sagaExchange $exchange) }}
{{- fail "services.*.settings.SAGA_EXCHANGE: both services must use the same exchange" }}
{{- end }}
{{- $sagaExchange = $exchange }}
{{- $queueType := get $settings "SAGA_QUEUE_TYPE" | default "quorum" }}
{{- $deliveryLimit := get $settings "SAGA_DELIVERY_LIMIT" | default 20 | int }}
{{- $delays := get $settings "SAGA_RETRY_DELAYS_MS" | default "[500, 2000, 10000]" | toString | fromJsonArray }}
{{- $base := dict "x-queue-type" $queueType }}
{{- if eq $queueType "quorum" }}
{{- $base = merge (dict "x-overflow" "reject-publish" "x-dead-letter-strategy" "at-least-once") $base }}
{{- end }}
{{- $work := printf "%s.events" $svc.name }}
{{- $deadLetter := printf "%s.dead-letter" $svc.name }}
{{- $requeue := printf "%s.requeue" $svc.name }}
{{- $exchanges = append $exchanges (dict "name" $requeue "vhost" $vhostName "type" "direct" "durable" true "auto_delete" false "internal" false "arguments" (dict)) }}
{{- $queues = append $queues (dict "name" $deadLetter "vhost" $vhostName "durable" true "auto_delete" false "arguments" (deepCopy $base)) }}
{{- $workArguments := merge (dict "x-dead-letter-exchange" "" "x-dead-letter-routing-key" $deadLetter) (deepCopy $base) }}
{{- if eq $queueType "quorum" }}
{{- $_ := set $workArguments "x-delivery-limit" $deliveryLimit }}
{{- end }}
{{- $queues = append $queues (dict "name" $work "vhost" $vhostName "durable" true "auto_delete" false "arguments" $workArguments) }}
{{- range $routingKey := get $consumes $svc.name }}
{{- $bindings = append $bindings (dict "source" $exchange "vhost" $vhostName "destination" $work "destination_type" "queue" "routing_key" $routingKey "arguments" (dict)) }}
{{- end }}
{{- range $delay := $delays }}
{{- $retry := printf "%s.retry.%dms" $svc.name (int $delay) }}
{{- $queues = append $queues (dict "name" $retry "vhost" $vhostName "durable" true "auto_delete" false "arguments" (merge (dict "x-message-ttl" (int $delay) "x-dead-letter-exchange" "" "x-dead-letter-routing-key" $work) (deepCopy $base))) }}
{{- $bindings = append $bindings (dict "source" $requeue "vhost" $vhostName "destination" $retry "destination_type" "queue" "routing_key" $retry "arguments" (dict)) }}
{{- end }}
{{- $bindings = append $bindings (dict "source" $requeue "vhost" $vhostName "destination" $deadLetter "destination_type" "queue" "routing_key" $deadLetter "arguments" (dict)) }}
{{- /* Least privilege: nothing to configure (the topology is above), publish only to the saga's exchange,
with the routing keys the service owns, and to its own requeue exchange; consume only its own work queue. */}}
{{- $permissions = append $permissions (dict "user" $svc.name "vhost" $vhostName "configure" "^$" "write" (printf "^(%s|%s)$" ($exchange | replace "." "\\.") ($requeue | replace "." "\\.")) "read" (printf "^%s$" ($work | replace "." "\\."))) }}
{{- $ownKeys := list }}
{{- range $routingKey := get $publishes $svc.name }}
{{- $ownKeys = append $ownKeys ($routingKey | replace "." "\\.") }}
{{- end }}
{{- $topicPermissions = append $topicPermissions (dict "user" $svc.name "vhost" $vhostName "exchange" $exchange "write" (printf "^(%s)$" (join "|" $ownKeys)) "read" "^$") }}
{{- end }}
{{- $exchanges = prepend $exchanges (dict "name" $sagaExchange "vhost" $vhostName "type" "topic" "durable" true "auto_delete" false "internal" false "arguments" (dict)) }}
{{- $vhost := dict "name" $vhostName "default_queue_type" "quorum" "metadata" (dict "description" "saga" "default_queue_type" "quorum") -}}
rabbitmq.conf: |
  # RabbitMQ 4.1+: the node of the lowest ordinal (-0) forms the cluster, every other node joins it by the name
  # it derives from its own (rabbit@<statefulset>-0.<domain>); nothing is asked of the Kubernetes API.
  cluster_formation.peer_discovery_backend = rabbit_peer_discovery_k8s
  cluster_partition_handling = pause_minority
  definitions.import_backend = local_filesystem
  definitions.local.path = /var/run/rabbitmq-definitions/definitions.json
  listeners.tcp.default = 5672
  management.tcp.port = 15672
  prometheus.tcp.port = 15692
  # The node's RAM is not what the container may use: the watermark is a fraction of the container's limit.
  total_memory_available_override_value = {{ include "saga.rabbitmq.memoryBytes" .Values.rabbitmq.resources.limits.memory }}
  vm_memory_high_watermark.relative = {{ .Values.rabbitmq.memoryHighWatermark }}
  {{- if gt (int .Values.rabbitmq.replicas) 1 }}
  # A queue declared while only some nodes had joined grows to every node once they have.
  quorum_queue.continuous_membership_reconciliation.enabled = true
  quorum_queue.continuous_membership_reconciliation.target_group_size = {{ .Values.rabbitmq.replicas }}
  {{- end }}
  log.console = true
  log.console.level = info
  log.file = false
enabled_plugins: |
  [rabbitmq_management,rabbitmq_peer_discovery_k8s,rabbitmq_prometheus].
definitions.template.json: |
  {{- dict "users" $users "vhosts" (list $vhost) "permissions" $permissions "topic_permissions" $topicPermissions "exchanges" $exchanges "queues" $queues "bindings" $bindings | toPrettyJson | nindent 2 }}
write-definitions.sh: |
  #!/bin/sh
  # Before RabbitMQ starts: install the Erlang cookie, then write the definitions the node imports at boot,
  # with each @user@ placeholder replaced by a salted hash of that user's password (from the environment).
  set -eu
  umask 077
  rm -f "$HOME/.erlang.cookie"
  cp "$COOKIE_SOURCE" "$HOME/.erlang.cookie"
  chmod 600 "$HOME/.erlang.cookie"
  # rabbit_password_hashing_sha256: base64(salt ++ sha256(salt ++ password)), with a random 4-byte salt.
  hash() {
    PASSWORD="$1" erl -noshell -eval '
      Password = unicode:characters_to_binary(os:getenv("PASSWORD")),
      Salt = crypto:strong_rand_bytes(4),
      Hash = crypto:hash(sha256, <<Salt/binary, Password/binary>>),
      io:put_chars(base64:encode(<<Salt/binary, Hash/binary>>)),
      halt().'
  }
  sed \
    -e "s|@{{ $admin }}@|$(hash "$ADMIN_PASSWORD")|" \
  {{- range $services }}
    -e "s|@{{ .name }}@|$(hash "${{ .name | upper | replace "-" "_" }}_PASSWORD")|" \
  {{- end }}
    "$DEFINITIONS_TEMPLATE" > "$DEFINITIONS_FILE.tmp"
  mv "$DEFINITIONS_FILE.tmp" "$DEFINITIONS_FILE"
  echo "definitions written for {{ len $users }} users"
{{- end }}

{{/* A Kubernetes memory quantity (768Mi, 1Gi, 805306368) in bytes, for RabbitMQ's memory settings. */}}
{{- define "saga.rabbitmq.memoryBytes" -}}
{{- $quantity := toString . }}
{{- $units := dict "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "k" 1000 "M" 1000000 "G" 1000000000 }}
{{- $match := regexFindAll "^([0-9]+)(Ki|Mi|Gi|k|M|G)?$" $quantity 1 }}
{{- if not $match }}
{{- fail (printf "rabbitmq.resources.limits.memory=%s: use a whole number with Ki, Mi, Gi, k, M or G" $quantity) }}
{{- end }}
{{- $unit := regexReplaceAll "^[0-9]+" $quantity "" }}
{{- $number := regexReplaceAll "[A-Za-z]+$" $quantity "" | int64 }}
{{- mul $number (get $units $unit | default 1) }}
{{- end }}

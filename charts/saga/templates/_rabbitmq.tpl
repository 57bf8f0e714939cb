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
{{- range $key := include "saga.serviceKeys" . | splitList " " }}
{{- $svc := include "saga.service" (dict "root" $ "key" $key) | fromJson }}
{{- $services = append $services $svc }}
{{- $users = append $users (dict "name" $svc.name "password_hash" (printf "@%s@" $svc.name) "hashing_algorithm" "rabbit_password_hashing_sha256" "tags" (list)) }}
{{- $permissions = append $permissions (dict "user" $svc.name "vhost" $vhostName "configure" $.Values.rabbitmq.servicePermissions "write" $.Values.rabbitmq.servicePermissions "read" $.Values.rabbitmq.servicePermissions) }}
{{- end }}
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
  {{- dict "users" $users "vhosts" (list $vhost) "permissions" $permissions | toPrettyJson | nindent 2 }}
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

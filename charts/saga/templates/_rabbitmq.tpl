{{/*
The RabbitMQ ConfigMap's data (also hashed into the pods' checksum/config annotation): the server
configuration, the plugins, the definitions template and the script that fills in the password hashes.
*/}}
{{- define "saga.rabbitmq.configData" -}}
{{- $admin := .Values.rabbitmq.adminUsername }}
{{- $users := list (dict "name" $admin "password_hash" (printf "@%s@" $admin) "hashing_algorithm" "rabbit_password_hashing_sha256" "tags" (list "administrator")) }}
{{- $vhostName := .Values.rabbitmq.vhost }}
{{- $permissions := list (dict "user" $admin "vhost" $vhostName "configure" ".*" "write" ".*" "read" ".*") }}
{{- /* The topology (exchanges, queues and their arguments, bindings, the service users' least privileges) is the code's,
generated into files/topology.yaml by `make chart-topology`; each service's settings fill in its placeholders. */}}
{{- $topology := .Files.Get "files/topology.yaml" | fromYaml }}
{{- $definitions := dict "permissions" $permissions "topic_permissions" (list) "exchanges" (list) "queues" (list) "bindings" (list) }}
{{- $services := list }}
{{- $sagaExchange := "" }}
{{- range $key := include "saga.serviceKeys" . | splitList " " }}
{{- $svc := include "saga.service" (dict "root" $ "key" $key) | fromJson }}
{{- $services = append $services $svc }}
{{- $users = append $users (dict "name" $svc.name "password_hash" (printf "@%s@" $svc.name) "hashing_algorithm" "rabbit_password_hashing_sha256" "tags" (list)) }}
{{- $own := get $topology.services $svc.name }}
{{- if not $own }}
{{- fail (printf "files/topology.yaml has no service %s: run `make chart-topology`" $svc.name) }}
{{- end }}
{{- $settings := $svc.settings | default dict }}
{{- $exchange := get $settings "SAGA_EXCHANGE" | default $topology.defaults.SAGA_EXCHANGE }}
{{- if and $sagaExchange (ne $sagaExchange $exchange) }}
{{- fail "services.*.settings.SAGA_EXCHANGE: both services must use the same exchange" }}
{{- end }}
{{- $sagaExchange = $exchange }}
{{- $queueType := get $settings "SAGA_QUEUE_TYPE" | default $topology.defaults.SAGA_QUEUE_TYPE }}
{{- if not (hasKey $own.queues $queueType) }}
{{- fail (printf "services.%s.settings.SAGA_QUEUE_TYPE=%s: the queue types are %s" $key $queueType (keys $own.queues | sortAlpha | join ", ")) }}
{{- end }}
{{- $delays := list }}
{{- range get $settings "SAGA_RETRY_DELAYS_MS" | default $topology.defaults.SAGA_RETRY_DELAYS_MS | toString | fromJsonArray }}
{{- $delays = append $delays (int .) }}
{{- end }}
{{- $values := dict "vhost" $vhostName "exchange" $exchange "exchange_pattern" ($exchange | replace "." "\\.") "delivery_limit" (get $settings "SAGA_DELIVERY_LIMIT" | default $topology.defaults.SAGA_DELIVERY_LIMIT | int) }}
{{- range $section, $entries := dict "exchanges" $own.exchanges "queues" (get $own.queues $queueType) "bindings" $own.bindings "permissions" $own.permissions "topic_permissions" $own.topic_permissions }}
{{- $filled := include "saga.rabbitmq.fill" (dict "entries" $entries "values" $values "delays" $delays) | fromJsonArray }}
{{- $_ := set $definitions $section (concat (get $definitions $section) $filled) }}
{{- end }}
{{- end }}
{{- $shared := include "saga.rabbitmq.fill" (dict "entries" $topology.exchanges "values" (dict "vhost" $vhostName "exchange" $sagaExchange) "delays" (list)) | fromJsonArray }}
{{- $_ := set $definitions "exchanges" (concat $shared $definitions.exchanges) }}
{{- $vhost := dict "name" $vhostName "default_queue_type" "quorum" "metadata" (dict "description" "saga" "default_queue_type" "quorum") -}}
rabbitmq.conf: |
  # Cluster formation that RabbitMQ 3.10 to 4.x all accept, asking nothing of the Kubernetes API: every node
  # names the node of ordinal 0 as its one seed; node 0 forms the cluster, the others keep trying to join it
  # once it runs (run.sh waits for it; the headless Service resolves pods that are not ready yet).
  cluster_formation.peer_discovery_backend = classic_config
  cluster_formation.classic_config.nodes.1 = {{ include "saga.rabbitmq.seedNode" . }}
  cluster_formation.discovery_retry_limit = 60
  cluster_formation.discovery_retry_interval = 2000
  cluster_partition_handling = pause_minority
  definitions.import_backend = local_filesystem
  definitions.local.path = /var/run/rabbitmq-definitions/definitions.json
  {{- if .Values.tls.enabled }}
  # TLS: AMQPS on 5671 and no plain AMQP listener, so nothing the services send crosses the network in clear.
  # Server-only TLS: the clients verify the node's certificate against ca.crt and log in with their passwords.
  listeners.tcp = none
  listeners.ssl.default = 5671
  ssl_options.cacertfile = {{ include "saga.tls.serverDir" . }}/ca.crt
  ssl_options.certfile = {{ include "saga.tls.serverDir" . }}/tls.crt
  ssl_options.keyfile = {{ include "saga.tls.serverDir" . }}/tls.key
  ssl_options.verify = verify_none
  ssl_options.fail_if_no_peer_cert = false
  {{- else }}
  listeners.tcp.default = 5672
  {{- end }}
  management.tcp.port = 15672
  prometheus.tcp.port = 15692
  # The node's RAM is not what the container may use: the watermark is a fraction of the container's limit.
  total_memory_available_override_value = {{ include "saga.rabbitmq.memoryBytes" .Values.rabbitmq.resources.limits.memory }}
  vm_memory_high_watermark.relative = {{ .Values.rabbitmq.memoryHighWatermark }}
  log.console = true
  log.console.level = info
  log.file = false
enabled_plugins: |
  [rabbitmq_management,rabbitmq_prometheus].
definitions.template.json: |
  {{- merge $definitions (dict "users" $users "vhosts" (list $vhost)) | toPrettyJson | nindent 2 }}
run.sh: |
  #!/bin/sh
  # The node's command. Node 0 declares the quorum queues (from the definitions) before the others have joined,
  # and RabbitMQ before 3.13 never adds a joining node to an existing queue: once this node runs in the cluster,
  # it makes itself a member of every quorum queue of the vhost (`rabbitmq-queues grow`, idempotent), checking
  # until it is in all of them. Then, or meanwhile, the server runs as the image's command would.
  set -eu
  (
    self="$RABBITMQ_NODENAME"
    for attempt in $(seq 1 120); do
      sleep 5
      rabbitmq-diagnostics --quiet check_running >/dev/null 2>&1 || continue
      queues=$(rabbitmqctl --quiet list_queues --no-table-headers -p {{ .Values.rabbitmq.vhost | quote }} type members 2>/dev/null) || continue
      quorum=$(printf '%s\n' "$queues" | grep '^quorum' || true)
      [ -n "$quorum" ] || continue
      if ! printf '%s\n' "$quorum" | grep -vq -- "$self"; then
        echo "member of every quorum queue ($(printf '%s\n' "$quorum" | wc -l) queues)"
        exit 0
      fi
      rabbitmq-queues --quiet grow "$self" all --vhost-pattern '.*' --queue-pattern '.*' >/dev/null 2>&1 || true
    done
    echo "not a member of every quorum queue after 10 minutes" >&2
  ) &
  # A new node other than the seed boots only once the seed runs. Before 3.13, peer discovery holds a
  # cluster-wide lock while it waits for a peer to join: a joining node held it waiting for the seed, and the
  # seed waited for the lock (seen on 3.10, no node booted). A node with data of its own rejoins without it.
  seed={{ include "saga.rabbitmq.seedNode" . | quote }}
  if [ "$RABBITMQ_NODENAME" != "$seed" ] && [ -z "$(ls -A "/var/lib/rabbitmq/mnesia/$RABBITMQ_NODENAME" 2>/dev/null)" ]; then
    echo "a new node: waiting until the seed $seed runs, then joining it"
    until rabbitmq-diagnostics --quiet --node "$seed" check_running >/dev/null 2>&1; do sleep 2; done
  fi
  exec rabbitmq-server
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

{{/*
Entries of files/topology.yaml with their placeholders filled in from `values`: a placeholder that is a whole string
becomes the value (a number stays one), one inside a longer string its text; an entry that names ${retry_delay_ms}
comes once per delay. A JSON list.
dict "entries" $entries "values" (dict "vhost" "saga" ...) "delays" (list 500 2000)
*/}}
{{- define "saga.rabbitmq.fill" -}}
{{- $filled := list }}
{{- range $entry := .entries }}
{{- $json := toJson $entry }}
{{- range $delay := ternary $.delays (list 0) (contains "${retry_delay_ms}" $json) }}
{{- $text := $json }}
{{- range $name, $value := merge (dict "retry_delay_ms" $delay) $.values }}
{{- $text = $text | replace (printf "\"${%s}\"" $name) (toJson $value) | replace (printf "${%s}" $name) (toJson $value | trimPrefix "\"" | trimSuffix "\"") }}
{{- end }}
{{- if contains "${" $text }}
{{- fail (printf "files/topology.yaml: a placeholder the chart does not fill in, in %s: run `make chart-topology`" $text) }}
{{- end }}
{{- $filled = append $filled (fromJson $text) }}
{{- end }}
{{- end }}
{{- toJson $filled }}
{{- end }}

{{/* The node of ordinal 0, the seed of the cluster: rabbit@<statefulset>-0.<headless service>.<namespace>.svc.<domain>. */}}
{{- define "saga.rabbitmq.seedNode" -}}
rabbit@{{ include "saga.componentName" (dict "root" . "component" "rabbitmq") }}-0.{{ include "saga.rabbitmq.headless" . }}.{{ .Release.Namespace }}.svc.{{ .Values.clusterDomain }}
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

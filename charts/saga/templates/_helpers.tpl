{{/*
Names, labels and the small functions every template shares.
Object names are `<fullname>-<component>`; selectors use name, instance and component only.
*/}}

{{- define "saga.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "saga.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "saga.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* dict "root" $ "component" "order-service" */}}
{{- define "saga.componentName" -}}
{{- printf "%s-%s" (include "saga.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The fully qualified name of a component's Service. */}}
{{- define "saga.host" -}}
{{- printf "%s.%s.svc.%s" (include "saga.componentName" .) .root.Release.Namespace .root.Values.clusterDomain }}
{{- end }}

{{- define "saga.selectorLabels" -}}
app.kubernetes.io/name: {{ include "saga.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "saga.labels" -}}
helm.sh/chart: {{ include "saga.chart" .root }}
{{ include "saga.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: saga
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* Every pod of the release, for the default-deny policy. */}}
{{- define "saga.releaseSelector" -}}
app.kubernetes.io/name: {{ include "saga.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The object metadata every namespaced object starts with: dict "root" $ "component" "x" ["name" "override"] */}}
{{- define "saga.metadata" -}}
name: {{ .name | default (include "saga.componentName" .) }}
namespace: {{ .root.Release.Namespace }}
labels:
  {{- include "saga.labels" . | nindent 2 }}
{{- end }}

{{/*
Deep merge for the shared defaults: maps merge key by key, everything else (lists, false, 0, "") replaces.
Sprig's merge and mergeOverwrite skip false and empty values, which would make `enabled: false` impossible.
Returns JSON: dict "base" $defaults "override" $values | include "saga.merge" | fromJson
*/}}
{{- define "saga.merge" -}}
{{- $out := deepCopy .base }}
{{- range $key, $value := .override }}
{{- $current := get $out $key }}
{{- if and (kindIs "map" $value) (kindIs "map" $current) }}
{{- $_ := set $out $key (include "saga.merge" (dict "base" $current "override" $value) | fromJson) }}
{{- else }}
{{- $_ := set $out $key $value }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/*
One service's settings: serviceDefaults merged with services.<key>, plus the names derived from the key.
The service names are the ones the code knows (saga_common.contract.topology): order-service, customer-service.
dict "root" $ "key" "order" | include "saga.service" | fromJson
*/}}
{{- define "saga.service" -}}
{{- $svc := include "saga.merge" (dict "base" .root.Values.serviceDefaults "override" (index .root.Values.services .key)) | fromJson }}
{{- $name := printf "%s-service" .key }}
{{- $_ := set $svc "key" .key }}
{{- $_ := set $svc "name" $name }}
{{- $_ := set $svc "fullName" (include "saga.componentName" (dict "root" .root "component" $name)) }}
{{- $_ := set $svc "dbComponent" (printf "%s-db" .key) }}
{{- $_ := set $svc "migrateComponent" (printf "%s-migrate" .key) }}
{{- $_ := set $svc "secretName" ($svc.existingSecret | default $svc.fullName) }}
{{- $_ := set $svc "dbSecretName" ($svc.database.existingSecret | default (include "saga.componentName" (dict "root" .root "component" $svc.dbComponent))) }}
{{- $_ := set $svc "imageRef" (include "saga.image" (dict "image" $svc.image "defaultTag" .root.Chart.AppVersion)) }}
{{- toJson $svc }}
{{- end }}

{{/* The keys of the services, in a fixed order. */}}
{{- define "saga.serviceKeys" -}}
order customer
{{- end }}

{{/*
One sagactl CronJob's settings: cronJobDefaults merged with cronJobs.<key>, its names, and `settings`: the
SAGA_* variables the command reads (SagactlSettings), as strings. SAGA_DEADLINE_S is the order service's
own, when the chart sets one (otherwise both use the same code default).
dict "root" $ "key" "reconcile" | include "saga.cronJob" | fromJson
*/}}
{{- define "saga.cronJob" -}}
{{- $job := include "saga.merge" (dict "base" .root.Values.cronJobDefaults "override" (index .root.Values.cronJobs .key)) | fromJson }}
{{- $_ := set $job "key" .key }}
{{- $_ := set $job "component" .key }}
{{- /* A CronJob's name leaves 11 characters for the suffix of its Jobs. */}}
{{- $_ := set $job "fullName" (include "saga.componentName" (dict "root" .root "component" .key) | trunc 52 | trimSuffix "-") }}
{{- $settings := dict }}
{{- if eq .key "reconcile" }}
{{- $_ := set $settings "SAGA_RECONCILE_GRACE_S" (int $job.graceSeconds | toString) }}
{{- $order := include "saga.service" (dict "root" .root "key" "order") | fromJson }}
{{- if hasKey $order.settings "SAGA_DEADLINE_S" }}
{{- $_ := set $settings "SAGA_DEADLINE_S" (get $order.settings "SAGA_DEADLINE_S" | toString) }}
{{- end }}
{{- else if eq .key "prune" }}
{{- $_ := set $settings "SAGA_OUTBOX_RETENTION_S" (int $job.outboxRetentionSeconds | toString) }}
{{- $_ := set $settings "SAGA_INBOX_RETENTION_S" (int $job.inboxRetentionSeconds | toString) }}
{{- end }}
{{- $_ := set $job "settings" $settings }}
{{- toJson $job }}
{{- end }}

{{/* The sagactl commands that run as CronJobs, in a fixed order. */}}
{{- define "saga.cronJobKeys" -}}
reconcile prune
{{- end }}

{{/* repository:tag[@digest]; dict "image" .image "defaultTag" "x" */}}
{{- define "saga.image" -}}
{{- $tag := .image.tag | default .defaultTag | toString }}
{{- if .image.digest }}
{{- printf "%s:%s@%s" .image.repository $tag .image.digest }}
{{- else }}
{{- printf "%s:%s" .image.repository $tag }}
{{- end }}
{{- end }}

{{/* Pod security context of the restricted profile; dict "uid" 10001 ["gid" 0] */}}
{{- define "saga.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ hasKey . "gid" | ternary .gid .uid }}
fsGroup: {{ hasKey . "gid" | ternary .gid .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "saga.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop:
    - ALL
{{- end }}

{{/*
A generated password, kept across upgrades: the value already in the Secret when there is one (`lookup`),
otherwise 32 random letters and digits (URL-safe, so it goes into URLs unencoded).
dict "root" $ "secret" "name" "key" "key"
*/}}
{{- define "saga.password" -}}
{{- $existing := lookup "v1" "Secret" .root.Release.Namespace .secret }}
{{- if and $existing (hasKey ($existing.data | default dict) .key) }}
{{- index $existing.data .key | b64dec }}
{{- else }}
{{- randAlphaNum 32 }}
{{- end }}
{{- end }}

{{/* Name of the RabbitMQ StatefulSet's headless Service and of its pods' DNS domain. */}}
{{- define "saga.rabbitmq.headless" -}}
{{- include "saga.componentName" (dict "root" . "component" "rabbitmq-headless") }}
{{- end }}

{{- define "saga.rabbitmq.secretName" -}}
{{- .Values.rabbitmq.existingSecret | default (include "saga.componentName" (dict "root" . "component" "rabbitmq")) }}
{{- end }}

{{- define "saga.grafana.secretName" -}}
{{- .Values.grafana.existingSecret | default (include "saga.componentName" (dict "root" . "component" "grafana")) }}
{{- end }}

{{/*
RABBITMQ_BROKER_URL: one URL per node, the services fail over between them.
dict "root" $ "username" "order-service" "password" "..."
*/}}
{{- define "saga.brokerUrl" -}}
{{- $root := .root }}
{{- $statefulSet := include "saga.componentName" (dict "root" $root "component" "rabbitmq") }}
{{- $domain := printf "%s.%s.svc.%s" (include "saga.rabbitmq.headless" $root) $root.Release.Namespace $root.Values.clusterDomain }}
{{- $urls := list }}
{{- /* "/" is the default vhost: an empty path names it. */}}
{{- $vhost := eq $root.Values.rabbitmq.vhost "/" | ternary "" $root.Values.rabbitmq.vhost }}
{{- range $ordinal := until (int $root.Values.rabbitmq.replicas) }}
{{- if $root.Values.tls.enabled }}
{{- /* AMQPS only (the nodes have no plain listener then); aio-pika verifies the chain and the host name. */}}
{{- $urls = append $urls (printf "amqps://%s:%s@%s-%d.%s:5671/%s?cafile=%s" $.username $.password $statefulSet $ordinal $domain $vhost (include "saga.tls.caFile" $root)) }}
{{- else }}
{{- $urls = append $urls (printf "amqp://%s:%s@%s-%d.%s:5672/%s" $.username $.password $statefulSet $ordinal $domain $vhost) }}
{{- end }}
{{- end }}
{{- join "," $urls }}
{{- end }}

{{/* SAGA_BROKER_PUBLISHERS: each service's broker user, which is its name (the users of the definitions). */}}
{{- define "saga.brokerPublishers" -}}
{{- $users := dict }}
{{- range $key := include "saga.serviceKeys" . | splitList " " }}
{{- $_ := set $users (printf "%s-service" $key) (printf "%s-service" $key) }}
{{- end }}
{{- toJson $users }}
{{- end }}

{{/* DATABASE_URL of a service: dict "root" $ "svc" $svc "password" "..." */}}
{{- define "saga.databaseUrl" -}}
{{- printf "postgresql://%s:%s@%s:5432/%s" .username .password (include "saga.host" (dict "root" .root "component" .svc.dbComponent)) .svc.database.name }}
{{- if .root.Values.tls.enabled }}
{{- /* verify-full: the certificate must chain to the CA and name the host (verify-ca or require would not). */}}
{{- printf "?sslmode=verify-full&sslrootcert=%s" (include "saga.tls.caFile" .root) }}
{{- end }}
{{- end }}

{{/* The role a service connects to its database as (the owner runs the migrations): $svc | include ... */}}
{{- define "saga.serviceDatabaseRole" -}}
{{- printf "%s_service" .database.username }}
{{- end }}

{{/* The Secret holding the development token signer's private key (only without auth.issuer): the helm test
pod and `make token` read it, no service does. */}}
{{- define "saga.tokenSigner" -}}
{{- .Values.auth.existingSecret | default (include "saga.componentName" (dict "root" . "component" "token-signer")) }}
{{- end }}

{{/* The Secret holding only the development signer's certificate, which the services mount. */}}
{{- define "saga.tokenVerifier" -}}
{{- .Values.auth.existingCertificateSecret | default (include "saga.componentName" (dict "root" . "component" "token-verifier")) }}
{{- end }}

{{/* Where the services send their traces; empty: tracing off. */}}
{{- define "saga.otlpEndpoint" -}}
{{- if .Values.jaeger.enabled }}
{{- printf "http://%s:4318" (include "saga.host" (dict "root" . "component" "jaeger")) }}
{{- else }}
{{- .Values.tracing.otlpEndpoint }}
{{- end }}
{{- end }}

{{/* Combinations that cannot work; included once, from validate.yaml. */}}
{{- define "saga.validate" -}}
{{- if ne (empty .Values.auth.existingSecret) (empty .Values.auth.existingCertificateSecret) }}
{{- fail "auth.existingSecret (the private key) and auth.existingCertificateSecret (the certificate the services mount) go together" }}
{{- end }}
{{- if ne (empty .Values.auth.issuer) (empty .Values.auth.jwksUrl) }}
{{- fail "auth.issuer and auth.jwksUrl go together: set both (an identity provider) or neither (the development signer)" }}
{{- end }}
{{- if and .Values.jaeger.enabled .Values.tracing.otlpEndpoint }}
{{- fail "tracing.otlpEndpoint is for a collector outside the chart: set it only with jaeger.enabled=false" }}
{{- end }}
{{- if and .Values.grafana.enabled (not .Values.prometheus.enabled) }}
{{- fail "grafana.enabled=true needs prometheus.enabled=true: every dashboard queries the Prometheus data source" }}
{{- end }}
{{- if and .Values.tls.existingSecret (not .Values.tls.enabled) }}
{{- fail "tls.existingSecret is used only with tls.enabled=true: set both, or neither" }}
{{- end }}
{{- if and .Values.tls.existingApiSecret (not .Values.tls.enabled) }}
{{- fail "tls.existingApiSecret is used only with tls.enabled=true: set both, or neither" }}
{{- end }}
{{- if and .Values.tls.enabled .Values.tls.existingSecret (not .Values.tls.existingApiSecret) }}
{{- fail "tls.existingSecret needs tls.existingApiSecret too: the chart has no CA to issue the APIs' certificate from (docs/security.md#tls)" }}
{{- end }}
{{- if eq (mod (int .Values.rabbitmq.replicas) 2) 0 }}
{{- fail (printf "rabbitmq.replicas=%d: use an odd number (1, 3, 5, ...) so that quorum queues can keep a majority" (int .Values.rabbitmq.replicas)) }}
{{- end }}
{{- range $key := include "saga.serviceKeys" . | splitList " " }}
{{- $svc := include "saga.service" (dict "root" $ "key" $key) | fromJson }}
{{- $needed := add (int $svc.preStopSleepSeconds) (int $svc.drainTimeoutSeconds) 5 }}
{{- if le (int $svc.terminationGracePeriodSeconds) $needed }}
{{- fail (printf "services.%s: terminationGracePeriodSeconds=%d must exceed preStopSleepSeconds + drainTimeoutSeconds + 5 = %d, or SIGKILL cuts the drain short" $key (int $svc.terminationGracePeriodSeconds) $needed) }}
{{- end }}
{{- if eq $svc.database.username "postgres" }}
{{- fail (printf "services.%s.database.username=postgres: that is the database's superuser; the owner is a role of its own, no superuser" $key) }}
{{- end }}
{{- if and $svc.autoscaling.enabled (gt (int $svc.autoscaling.minReplicas) (int $svc.autoscaling.maxReplicas)) }}
{{- fail (printf "services.%s: autoscaling.minReplicas=%d is above maxReplicas=%d" $key (int $svc.autoscaling.minReplicas) (int $svc.autoscaling.maxReplicas)) }}
{{- end }}
{{- range $name, $_ := $svc.settings }}
{{- if has $name (list "SAGA_ENVIRONMENT" "SAGA_HTTP_PORT" "SAGA_HTTP_HOST" "SAGA_LOG_LEVEL" "SAGA_LOG_FORMAT" "SAGA_DRAIN_TIMEOUT_S" "SAGA_BROKER_TOPOLOGY" "SAGA_BROKER_PUBLISHERS" "SAGA_SERVICE_DATABASE_ROLE" "SAGA_SERVICE_DATABASE_PASSWORD") }}
{{- fail (printf "services.%s.settings.%s is set by the chart itself; use the chart's own value for it" $key $name) }}
{{- end }}
{{- /* The services never read these: sagactl does, in the CronJobs. */}}
{{- $operations := dict "SAGA_OUTBOX_RETENTION_S" "cronJobs.prune.outboxRetentionSeconds" "SAGA_INBOX_RETENTION_S" "cronJobs.prune.inboxRetentionSeconds" "SAGA_RECONCILE_GRACE_S" "cronJobs.reconcile.graceSeconds" }}
{{- if hasKey $operations $name }}
{{- fail (printf "services.%s.settings.%s is read by sagactl, not by the service; set %s instead" $key $name (get $operations $name)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

{{/*
The start of every pod spec: no service links, the service account token only where the pod talks to the
Kubernetes API, the restricted security context, pull secrets.
dict "root" $ "uid" 999 ["gid" 0] ["serviceAccount" "name"]
*/}}
{{- define "saga.podSpec" -}}
enableServiceLinks: false
{{- if .serviceAccount }}
serviceAccountName: {{ .serviceAccount }}
automountServiceAccountToken: true
{{- else }}
automountServiceAccountToken: false
{{- end }}
securityContext:
  {{- include "saga.podSecurityContext" . | nindent 2 }}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
A file's text for a YAML block scalar: every non-empty line indented, empty lines left empty (`nindent`
would leave trailing spaces). dict "text" $text "indent" 4; the first line starts on a new line.
*/}}
{{- define "saga.blockText" -}}
{{- $pad := repeat (int .indent) " " }}
{{- printf "\n%s" (regexReplaceAll "(?m)^(.+)$" (trim .text) (printf "%s${1}" $pad)) }}
{{- end }}

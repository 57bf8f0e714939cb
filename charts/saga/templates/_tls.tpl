{{/*
TLS on every hop to PostgreSQL and RabbitMQ (tls.enabled; docs/security.md#tls). One Secret in cert-manager's
layout holds it: ca.crt (what the clients verify against), tls.crt and tls.key (the one server certificate both
databases and every broker node present). The services take TLS from their URLs only (sslmode=verify-full,
amqps://...?cafile=), so the chart builds those and mounts ca.crt, nothing else, into every client pod.
*/}}

{{/* The Secret with ca.crt, tls.crt and tls.key: tls.existingSecret, or the one templates/tls.yaml generates. */}}
{{- define "saga.tls.secretName" -}}
{{- .Values.tls.existingSecret | default (include "saga.componentName" (dict "root" . "component" "tls")) }}
{{- end }}

{{/* The generated CA's certificate and private key (generated mode only): no pod mounts it. */}}
{{- define "saga.tls.caSecretName" -}}
{{- include "saga.componentName" (dict "root" . "component" "tls-ca") }}
{{- end }}

{{/* Where the client pods (services, migrations, sagactl) find the CA: the sslrootcert and cafile of their URLs. */}}
{{- define "saga.tls.caFile" -}}
/var/run/saga-tls/ca.crt
{{- end }}

{{/* Where PostgreSQL and RabbitMQ find their certificate and key (and the CA). */}}
{{- define "saga.tls.serverDir" -}}
/etc/saga-tls
{{- end }}

{{/*
Every host name a client puts in a URL, and the short forms of the Services, as a JSON list: the server
certificate's subject alternative names. Each database's Service (the host of DATABASE_URL), each RabbitMQ
node under the headless Service (the hosts of RABBITMQ_BROKER_URL) and RabbitMQ's ClusterIP Service.
*/}}
{{- define "saga.tls.dnsNames" -}}
{{- $root := . }}
{{- $ns := .Release.Namespace }}
{{- $services := list }}
{{- range $key := include "saga.serviceKeys" . | splitList " " }}
{{- $svc := include "saga.service" (dict "root" $root "key" $key) | fromJson }}
{{- $services = append $services (include "saga.componentName" (dict "root" $root "component" $svc.dbComponent)) }}
{{- end }}
{{- $statefulSet := include "saga.componentName" (dict "root" . "component" "rabbitmq") }}
{{- $services = append $services $statefulSet }}
{{- $names := list }}
{{- range $name := $services }}
{{- $names = concat $names (list (printf "%s.%s.svc.%s" $name $ns $root.Values.clusterDomain) (printf "%s.%s.svc" $name $ns) (printf "%s.%s" $name $ns) $name) }}
{{- end }}
{{- $domain := printf "%s.%s.svc.%s" (include "saga.rabbitmq.headless" .) $ns .Values.clusterDomain }}
{{- range $ordinal := until (int .Values.rabbitmq.replicas) }}
{{- $names = append $names (printf "%s-%d.%s" $statefulSet $ordinal $domain) }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* The ca.crt volume of a client pod (only that key of the Secret: never the server's private key). */}}
{{- define "saga.tls.caVolume" -}}
- name: tls-ca
  secret:
    secretName: {{ include "saga.tls.secretName" . }}
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}

{{- define "saga.tls.caMount" -}}
- name: tls-ca
  mountPath: {{ include "saga.tls.caFile" . | dir }}
  readOnly: true
{{- end }}

{{/*
The server's volume (PostgreSQL, RabbitMQ): dict "root" $ "keys" (list "tls.crt" "tls.key" ...).
Why defaultMode 0440 and fsGroup rather than an initContainer copy: PostgreSQL refuses a private key that others
may read, or that is owned by a user other than itself or root; it accepts one owned by root that only its group
may read. The kubelet writes Secret files as root, group-owned by the pod's fsGroup (999, the group of the
postgres and rabbitmq users, who run as 999): 0440 root:999 is such a key, no copy needed, and a renewed
certificate (cert-manager) reaches the files in place. (0444 would be refused: "group or world access".)
*/}}
{{- define "saga.tls.serverVolume" -}}
- name: tls
  secret:
    secretName: {{ include "saga.tls.secretName" .root }}
    defaultMode: 0440
    items:
      {{- range .keys }}
      - key: {{ . }}
        path: {{ . }}
      {{- end }}
{{- end }}

{{- define "saga.tls.serverMount" -}}
- name: tls
  mountPath: {{ include "saga.tls.serverDir" . }}
  readOnly: true
{{- end }}

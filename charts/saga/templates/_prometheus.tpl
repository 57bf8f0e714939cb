{{/*
The Prometheus ConfigMap's data: prometheus.yml and, when the project ships rules, alerts.yaml.
dict "root" $ "rules" (.Files.Get "files/prometheus/alerts.yaml")
*/}}
{{- define "saga.prometheus.configData" -}}
{{- $root := .root }}
{{- $instance := $root.Release.Name }}
{{- $serviceNames := list }}
{{- range $key := include "saga.serviceKeys" $root | splitList " " }}
{{- $serviceNames = append $serviceNames (printf "%s-service" $key) }}
{{- end -}}
prometheus.yml: |
  global:
    scrape_interval: {{ $root.Values.prometheus.scrapeInterval }}
    evaluation_interval: {{ $root.Values.prometheus.scrapeInterval }}
  {{- if .rules }}
  rule_files:
    - /etc/prometheus/alerts.yaml
  {{- end }}
  scrape_configs:
    {{- range $job := list (dict "name" "saga-services" "components" (join "|" $serviceNames) "port" "http")
                          (dict "name" "rabbitmq" "components" "rabbitmq" "port" "prometheus") }}
    - job_name: {{ $job.name }}
      metrics_path: /metrics
      {{- if and (eq $job.name "saga-services") $root.Values.tls.enabled }}
      # The APIs serve HTTPS: verified against their CA. Targets are pod IPs, which the certificate does not
      # name; it names both services' Services, so any of those names is the one to check it for.
      scheme: https
      tls_config:
        ca_file: {{ printf "%s/ca.crt" (include "saga.tls.apiDir" $root) }}
        server_name: {{ include "saga.tls.apiDnsNames" $root | fromJsonArray | first }}
      {{- end }}
      kubernetes_sd_configs:
        - role: pod
          namespaces:
            names:
              - {{ $root.Release.Namespace }}
      relabel_configs:
        # This release's pods of these components, on the named container port, while they run.
        - source_labels:
            - __meta_kubernetes_pod_label_app_kubernetes_io_instance
            - __meta_kubernetes_pod_label_app_kubernetes_io_component
            - __meta_kubernetes_pod_container_port_name
            - __meta_kubernetes_pod_phase
          regex: {{ printf "%s;(%s);%s;Running" $instance $job.components $job.port | quote }}
          action: keep
        - source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_component]
          target_label: service
        - source_labels: [__meta_kubernetes_pod_name]
          target_label: pod
        - source_labels: [__meta_kubernetes_namespace]
          target_label: namespace
    {{- end }}
{{- with .rules }}
alerts.yaml: |
  {{- include "saga.blockText" (dict "text" . "indent" 2) }}
{{- end }}
{{- end }}

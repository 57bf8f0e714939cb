{{/* The Grafana ConfigMap's data: the provisioned data sources and the dashboard provider. */}}
{{- define "saga.grafana.configData" -}}
{{- $datasources := list }}
{{- if .Values.prometheus.enabled }}
{{- $datasources = append $datasources (dict "name" "Prometheus" "uid" "prometheus" "type" "prometheus" "access" "proxy" "isDefault" true "url" (printf "http://%s:9090" (include "saga.host" (dict "root" . "component" "prometheus"))) "jsonData" (dict "timeInterval" .Values.prometheus.scrapeInterval)) }}
{{- end }}
{{- if .Values.jaeger.enabled }}
{{- $datasources = append $datasources (dict "name" "Jaeger" "uid" "jaeger" "type" "jaeger" "access" "proxy" "isDefault" false "url" (printf "http://%s:16686" (include "saga.host" (dict "root" . "component" "jaeger")))) }}
{{- end -}}
datasources.yaml: |
  {{- dict "apiVersion" 1 "datasources" $datasources | toYaml | nindent 2 }}
dashboards.yaml: |
  apiVersion: 1
  providers:
    - name: saga
      folder: Saga
      type: file
      disableDeletion: true
      allowUiUpdates: false
      options:
        path: /var/lib/grafana-dashboards/saga
{{- end }}

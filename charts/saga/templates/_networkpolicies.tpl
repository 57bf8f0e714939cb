{{/*
The peers and ports of one NetworkPolicy rule (see networkpolicies.yaml):
dict "root" $ "rule" (dict "components" (list ...) | "any" "cidrs" (list ...) "ports" (list ...)) "direction" "from"|"to"
*/}}
{{- define "saga.networkPolicyPeers" -}}
{{- $rule := .rule }}
{{- if eq (toString $rule.components) "any" }}
{{- /* no peer list: any destination */}}
{{- else if $rule.cidrs }}
{{ .direction }}:
  {{- range $rule.cidrs }}
  - ipBlock:
      cidr: {{ . }}
  {{- end }}
{{- else if $rule.components }}
{{ .direction }}:
  - podSelector:
      matchLabels:
        {{- include "saga.releaseSelector" .root | nindent 8 }}
      {{- if eq (len $rule.components) 1 }}
        app.kubernetes.io/component: {{ first $rule.components }}
      {{- else }}
      matchExpressions:
        - key: app.kubernetes.io/component
          operator: In
          values: [{{ join ", " $rule.components }}]
      {{- end }}
{{- else }}
{{ .direction }}:
  - podSelector: {}
{{- end }}
{{- with $rule.ports }}
ports:
  {{- range . }}
  - port: {{ . }}
    protocol: TCP
  {{- end }}
{{- end }}
{{- end }}

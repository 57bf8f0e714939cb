{{/* Parts of services.yaml. */}}

{{- define "saga.migrationStep" -}}
- name: {{ first .args }}
  image: {{ .svc.imageRef | quote }}
  imagePullPolicy: {{ .svc.image.pullPolicy }}
  args:
    {{- toYaml .args | nindent 4 }}
  env:
    {{- include "saga.serviceEnv" . | nindent 4 }}
  resources:
    {{- toYaml .svc.migration.resources | nindent 4 }}
  securityContext:
    {{- include "saga.containerSecurityContext" .root | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
{{- end }}

{{/*
The environment the service and its CLI commands (migrate, seed) share: dict "root" $ "svc" $svc.
No broker URL: only `serve` talks to RabbitMQ, so only the Deployment gets it.
*/}}
{{- define "saga.serviceEnv" -}}
# production refuses a development password in DATABASE_URL (and, for `serve`, in RABBITMQ_BROKER_URL).
- name: SAGA_ENVIRONMENT
  value: production
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .svc.secretName }}
      key: database-url
- name: SAGA_LOG_LEVEL
  value: {{ .svc.logLevel | quote }}
- name: SAGA_LOG_FORMAT
  value: json
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end }}

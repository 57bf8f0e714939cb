{{/* Parts of services.yaml. */}}

{{- define "saga.migrationStep" -}}
- name: {{ first .args }}
  image: {{ .svc.imageRef | quote }}
  imagePullPolicy: {{ .svc.image.pullPolicy }}
  args:
    {{- toYaml .args | nindent 4 }}
  env:
    {{- include "saga.serviceEnv" (merge (dict "migration" true) .) | nindent 4 }}
    {{- if eq (first .args) "migrate" }}
    # After the migrations, the service role gets data access to the tables and nothing else.
    - name: SAGA_SERVICE_DATABASE_ROLE
      value: {{ include "saga.serviceDatabaseRole" .svc | quote }}
    - name: SAGA_SERVICE_DATABASE_PASSWORD
      valueFrom:
        secretKeyRef:
          name: {{ .svc.secretName }}
          key: service-database-password
    {{- end }}
  resources:
    {{- toYaml .svc.migration.resources | nindent 4 }}
  securityContext:
    {{- include "saga.containerSecurityContext" .root | nindent 4 }}
  volumeMounts:
    - name: tmp
      mountPath: /tmp
    {{- if .root.Values.tls.enabled }}
    {{- include "saga.tls.caMount" .root | nindent 4 }}
    {{- end }}
{{- end }}

{{/*
The environment the service and its CLI commands (migrate, seed) share: dict "root" $ "svc" $svc
["migration" true: the owner's DATABASE_URL, for the migration Job's steps].
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
      key: {{ if .migration }}migration-database-url{{ else }}database-url{{ end }}
- name: SAGA_LOG_LEVEL
  value: {{ .svc.logLevel | quote }}
- name: SAGA_LOG_FORMAT
  value: json
- name: PYTHONDONTWRITEBYTECODE
  value: "1"
{{- end }}

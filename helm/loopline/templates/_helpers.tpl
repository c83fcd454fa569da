{{- define "loopline.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "loopline.fullname" -}}
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

{{- define "loopline.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "loopline.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "loopline.selectorLabels" -}}
app.kubernetes.io/name: {{ include "loopline.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "loopline.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "loopline.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "loopline.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "loopline.runsNamespace" -}}
{{- default .Release.Namespace .Values.runs.namespace }}
{{- end }}

{{/* Environment shared by the worker and the serving endpoint: Kafka, MLflow, config. */}}
{{- define "loopline.commonEnv" -}}
- name: LOOPLINE_BROKER
  value: {{ .Values.kafka.bootstrapServers | quote }}
- name: LOOPLINE_TOPIC_PREFIX
  value: {{ .Values.kafka.topicPrefix | quote }}
- name: LOOPLINE_PARTITIONS
  value: {{ .Values.kafka.partitions | quote }}
- name: LOOPLINE_MLFLOW_URI
  value: {{ .Values.mlflow.trackingUri | quote }}
- name: LOOPLINE_CONFIG
  value: /etc/loopline/loopline.yaml
- name: LOOPLINE_STATE_DIR
  value: /var/lib/loopline
- name: HOME
  value: /tmp
- name: MLFLOW_DISABLE_TELEMETRY
  value: "true"
{{- if .Values.kafka.sasl.enabled }}
- name: LOOPLINE_KAFKA_SECURITY_PROTOCOL
  value: {{ .Values.kafka.sasl.securityProtocol | quote }}
- name: LOOPLINE_KAFKA_SASL_MECHANISM
  value: {{ .Values.kafka.sasl.mechanism | quote }}
- name: LOOPLINE_KAFKA_SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ required "kafka.sasl.existingSecret is required when kafka.sasl.enabled" .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.usernameKey }}
- name: LOOPLINE_KAFKA_SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.sasl.existingSecret }}
      key: {{ .Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if .Values.mlflow.existingSecret }}
- name: MLFLOW_TRACKING_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ .Values.mlflow.existingSecret }}
      key: {{ .Values.mlflow.usernameKey }}
- name: MLFLOW_TRACKING_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ .Values.mlflow.existingSecret }}
      key: {{ .Values.mlflow.passwordKey }}
{{- end }}
{{- end }}

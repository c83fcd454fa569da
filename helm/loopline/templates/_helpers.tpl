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
{{- include "loopline.kafkaEnv" . }}
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

{{/*
Kafka security: the LOOPLINE_KAFKA_* settings streams.security reads, and its secrets as files
in one read-only projected volume at /etc/loopline-kafka (a rotated Secret reaches the next
client made). A combination that cannot work fails the render, naming the value to fix.
*/}}
{{- define "loopline.kafkaEnv" -}}
{{- $k := .Values.kafka }}
{{- $sasl := has $k.securityProtocol (list "SASL_PLAINTEXT" "SASL_SSL") }}
{{- $tls := has $k.securityProtocol (list "SSL" "SASL_SSL") }}
{{- if and $sasl (not $k.sasl.mechanism) }}
{{- fail (printf "kafka.sasl.mechanism is required with kafka.securityProtocol=%s" $k.securityProtocol) }}
{{- end }}
{{- if and $sasl (not $k.sasl.existingSecret) }}
{{- fail (printf "kafka.sasl.existingSecret (the Secret with the credentials) is required with kafka.securityProtocol=%s" $k.securityProtocol) }}
{{- end }}
{{- if and (not $sasl) $k.sasl.mechanism }}
{{- fail (printf "kafka.sasl.mechanism is set but kafka.securityProtocol=%s uses no SASL (SASL_SSL or SASL_PLAINTEXT do)" $k.securityProtocol) }}
{{- end }}
{{- if and (not $tls) (or $k.tls.caSecret $k.tls.clientCertSecret) }}
{{- fail (printf "kafka.tls is set but kafka.securityProtocol=%s uses no TLS (SSL or SASL_SSL do)" $k.securityProtocol) }}
{{- end }}
{{- if ne $k.securityProtocol "PLAINTEXT" }}
- name: LOOPLINE_KAFKA_SECURITY_PROTOCOL
  value: {{ $k.securityProtocol | quote }}
{{- end }}
{{- if $sasl }}
- name: LOOPLINE_KAFKA_SASL_MECHANISM
  value: {{ $k.sasl.mechanism | quote }}
{{- if eq $k.sasl.mechanism "OAUTHBEARER" }}
- name: LOOPLINE_KAFKA_SASL_OAUTH_TOKEN_FILE
  value: /etc/loopline-kafka/token
{{- else }}
- name: LOOPLINE_KAFKA_SASL_USERNAME_FILE
  value: /etc/loopline-kafka/username
- name: LOOPLINE_KAFKA_SASL_PASSWORD_FILE
  value: /etc/loopline-kafka/password
{{- end }}
{{- end }}
{{- if and $tls $k.tls.caSecret }}
- name: LOOPLINE_KAFKA_SSL_CA_FILE
  value: /etc/loopline-kafka/ca.crt
{{- end }}
{{- if and $tls $k.tls.clientCertSecret }}
- name: LOOPLINE_KAFKA_SSL_CERT_FILE
  value: /etc/loopline-kafka/tls.crt
- name: LOOPLINE_KAFKA_SSL_KEY_FILE
  value: /etc/loopline-kafka/tls.key
{{- end }}
{{- if and $tls (not $k.tls.checkHostname) }}
- name: LOOPLINE_KAFKA_SSL_CHECK_HOSTNAME
  value: "false"
{{- end }}
{{- end }}

{{- define "loopline.kafkaSecrets" -}}
{{- $k := .Values.kafka }}
{{- if or (has $k.securityProtocol (list "SASL_PLAINTEXT" "SASL_SSL")) $k.tls.caSecret $k.tls.clientCertSecret }}true{{ end }}
{{- end }}

{{- define "loopline.kafkaVolumeMount" -}}
{{- if include "loopline.kafkaSecrets" . }}
- name: kafka-secrets
  mountPath: /etc/loopline-kafka
  readOnly: true
{{- end }}
{{- end }}

{{- define "loopline.kafkaVolume" -}}
{{- $k := .Values.kafka }}
{{- if include "loopline.kafkaSecrets" . }}
- name: kafka-secrets
  projected:
    defaultMode: 0440
    sources:
      {{- if has $k.securityProtocol (list "SASL_PLAINTEXT" "SASL_SSL") }}
      - secret:
          name: {{ $k.sasl.existingSecret }}
          items:
            {{- if eq $k.sasl.mechanism "OAUTHBEARER" }}
            - {key: {{ $k.sasl.tokenKey }}, path: token}
            {{- else }}
            - {key: {{ $k.sasl.usernameKey }}, path: username}
            - {key: {{ $k.sasl.passwordKey }}, path: password}
            {{- end }}
      {{- end }}
      {{- with $k.tls.caSecret }}
      - secret:
          name: {{ . }}
          items:
            - {key: {{ $k.tls.caKey }}, path: ca.crt}
      {{- end }}
      {{- with $k.tls.clientCertSecret }}
      - secret:
          name: {{ . }}
          items:
            - {key: {{ $k.tls.certKey }}, path: tls.crt}
            - {key: {{ $k.tls.keyKey }}, path: tls.key}
      {{- end }}
{{- end }}
{{- end }}

{{/* The Secret holding the serving key: the one named, or the chart's own. */}}
{{- define "loopline.servingKeySecret" -}}
{{- default (printf "%s-serving-key" (include "loopline.fullname" .)) .Values.serving.key.existingSecret }}
{{- end }}

{{/*
The dead-letter spill store (streams/spill.py): deadletter.spillUri, else the claim of
deadletter.persistence mounted at deadletterMount, else empty (the worker's default,
<state dir>/deadletter: an emptyDir, lost with the pod).
*/}}
{{- define "loopline.deadletterMount" -}}
/var/lib/loopline-deadletter
{{- end }}

{{- define "loopline.deadletterClaim" -}}
{{- default (printf "%s-deadletter" (include "loopline.fullname" .)) .Values.deadletter.persistence.existingClaim }}
{{- end }}

{{- define "loopline.deadletterSpillUri" -}}
{{- $d := .Values.deadletter }}
{{- if and $d.spillUri $d.persistence.enabled }}
{{- fail "deadletter.spillUri and deadletter.persistence.enabled both say where the spilled bytes go: set one of them" }}
{{- end }}
{{- if $d.spillUri }}
{{- $d.spillUri }}
{{- else if $d.persistence.enabled }}
{{- printf "file://%s" (include "loopline.deadletterMount" .) }}
{{- end }}
{{- end }}

{{/*
The worker's tables (values: worker.tables). With persistence, the worker is a StatefulSet and
each pod mounts its own claim at tableDir: the Faust data dir under the state dir
(loopline.settings.Settings.table_dir, for LOOPLINE_STATE_DIR=/var/lib/loopline).
*/}}
{{- define "loopline.tableDir" -}}
/var/lib/loopline/faust
{{- end }}

{{- define "loopline.workerStateful" -}}
{{- $t := .Values.worker.tables }}
{{- if and $t.persistence.enabled (ne $t.store "rocksdb") }}
{{- fail (printf "worker.tables.persistence.enabled needs worker.tables.store=rocksdb (store=%s keeps nothing on disk)" $t.store) }}
{{- end }}
{{- if $t.persistence.enabled }}true{{ end }}
{{- end }}

{{/* How kubectl names the worker: deploy/NAME, or statefulset/NAME with table persistence. */}}
{{- define "loopline.workerRef" -}}
{{ if include "loopline.workerStateful" . }}statefulset{{ else }}deploy{{ end }}/{{ include "loopline.fullname" . }}-worker
{{- end }}

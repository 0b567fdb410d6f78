{{/*
The operator's command line and settings. Names of the KUBETUNE_* variables
are those read by kubetune_operator.settings (tests/chart checks each one the
chart sets is read there).
*/}}
{{- define "kubetune.operatorArgs" -}}
- run
- --module=kubetune_operator.handlers
{{- if eq .Values.scope "cluster" }}
- --all-namespaces
{{- else }}
{{- range $ns := include "kubetune.watchNamespaces" . | fromJsonArray }}
- --namespace={{ $ns }}
{{- end }}
{{- end }}
{{- if .Values.peering.enabled }}
- --peering={{ .Values.peering.name }}
{{- else }}
- --standalone
{{- end }}
- --liveness=http://0.0.0.0:{{ .Values.operator.livenessPort }}/healthz
{{- if eq .Values.operator.logLevel "verbose" }}
- --verbose
{{- else if eq .Values.operator.logLevel "debug" }}
- --debug
{{- end }}
{{- with .Values.operator.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "kubetune.operatorEnv" -}}
{{- $o := .Values.operator -}}
# Kopf's peer identity: the pod name, stable for the pod's life.
- name: POD_ID
  valueFrom:
    fieldRef:
      fieldPath: metadata.name
- name: KUBETUNE_TRAINER_IMAGE
  value: {{ $o.trainerImage | quote }}
- name: KUBETUNE_IMAGE_PULL_POLICY
  value: {{ $o.imagePullPolicy | quote }}
- name: KUBETUNE_ALLOWED_IMAGE_PREFIXES
  value: {{ join "," $o.allowedImagePrefixes | quote }}
- name: KUBETUNE_DEFAULT_BUCKET_URI
  value: {{ $o.defaultBucketUri | quote }}
- name: KUBETUNE_DEFAULT_S3_SECRET
  value: {{ $o.defaultS3Secret | quote }}
- name: KUBETUNE_DEFAULT_S3_ENDPOINT
  value: {{ $o.defaultS3Endpoint | quote }}
- name: KUBETUNE_DEFAULT_S3_REGION
  value: {{ $o.defaultS3Region | quote }}
- name: KUBETUNE_VLLM_IMAGE
  value: {{ $o.vllmImage | quote }}
- name: KUBETUNE_FETCH_IMAGE
  value: {{ $o.fetchImage | quote }}
# The admin policy, as the KubetunePolicy says it (templates/policy.yaml).
- name: KUBETUNE_POLICY
  value: {{ include "kubetune.policySpec" . | quote }}
{{- if $o.extraTrainerEnv }}
- name: KUBETUNE_EXTRA_TRAINER_ENV
  value: {{ include "kubetune.pairs" $o.extraTrainerEnv | quote }}
{{- end }}
# Empty means all namespaces (cluster scope).
- name: KUBETUNE_WATCH_NAMESPACES
  value: {{ ternary "" (include "kubetune.watchNamespaces" . | fromJsonArray | join ",") (eq .Values.scope "cluster") | quote }}
- name: KUBETUNE_CLIENT_QPS
  value: {{ $o.clientQps | quote }}
- name: KUBETUNE_CLIENT_BURST
  value: {{ $o.clientBurst | quote }}
- name: KUBETUNE_METRICS_PORT
  value: {{ $o.metricsPort | quote }}
- name: KUBETUNE_LIVENESS_PORT
  value: {{ $o.livenessPort | quote }}
- name: KUBETUNE_METRICS_SCRAPE_INTERVAL
  value: {{ $o.metricsScrapeInterval | quote }}
- name: KUBETUNE_METRICS_SCRAPE_TIMEOUT
  value: {{ $o.metricsScrapeTimeout | quote }}
- name: KUBETUNE_MAX_WORKERS
  value: {{ $o.maxWorkers | quote }}
- name: KUBETUNE_PEERING_NAME
  value: {{ .Values.peering.name | quote }}
# KUBETUNE_PEERING_PRIORITY is left unset on purpose: each replica then picks
# a random priority, so exactly one is active. Kopf pauses ALL replicas that
# share one priority.
{{- end }}

{{/* A map as KEY=VALUE,KEY2=VALUE2 (sorted), the format the operator parses. */}}
{{- define "kubetune.pairs" -}}
{{- $out := list }}
{{- range $k := keys . | sortAlpha }}
{{- $out = append $out (printf "%s=%v" $k (get $ $k)) }}
{{- end }}
{{- join "," $out }}
{{- end }}

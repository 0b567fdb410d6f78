{{/*
The effective admin policy (a KubetunePolicy spec, as JSON): the `policy`
values plus what the operator's own defaults need, the default bucket's
per-namespace prefix and the default S3 endpoint. The KubetunePolicy object
and the operator's KUBETUNE_POLICY are both rendered from it, so the API server
and the operator enforce the same policy.
*/}}
{{- define "kubetune.policySpec" -}}
{{- $p := .Values.policy -}}
{{- $o := .Values.operator -}}
{{- $endpoints := $p.allowedS3Endpoints -}}
{{- if $o.defaultS3Endpoint }}
{{- $endpoints = prepend $p.allowedS3Endpoints $o.defaultS3Endpoint | uniq -}}
{{- end }}
{{- $roots := prepend $p.storageRoots (printf "%s/{namespace}/" (trimSuffix "/" $o.defaultBucketUri)) | uniq -}}
{{- dict "secretLabel" $p.secretLabel "trustRemoteCode" $p.trustRemoteCode "allowedS3Endpoints" $endpoints
    "allowedTrackingHosts" $p.allowedTrackingHosts "allowedTolerations" $p.allowedTolerations
    "allowedPriorityClasses" $p.allowedPriorityClasses "allowedNodeSelectors" $p.allowedNodeSelectors
    "storageRoots" $roots "readOnlyRoots" $p.readOnlyRoots | toJson -}}
{{- end }}

{{/* Where the admission policy's binding applies: the values' selector, else every watched namespace. */}}
{{- define "kubetune.policyNamespaceSelector" -}}
{{- if .Values.policy.admission.namespaceSelector -}}
{{- toYaml .Values.policy.admission.namespaceSelector -}}
{{- else if eq .Values.scope "namespaced" -}}
{{- dict "matchExpressions" (list (dict "key" "kubernetes.io/metadata.name" "operator" "In" "values" (include "kubetune.watchNamespaces" . | fromJsonArray))) | toYaml -}}
{{- else -}}
{}
{{- end -}}
{{- end }}

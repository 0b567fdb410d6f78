{{/*
The operator's permissions, in one place so that the ClusterRole (cluster
scope) and each Role (namespaced scope) grant exactly the same namespaced verbs.
Every verb below is used by the operator or by Kopf; tests/chart proves with
`kubectl auth can-i` that each is granted and that nothing broader is.
Deliberately absent: any access to Secrets (jobs reference them by name only),
pods/exec, pods/log, delete on anything (children are garbage-collected
through ownerReferences; a failed multi-node attempt's pods are evicted), and
RBAC objects.
*/}}
{{- define "kubetune.namespacedRules" -}}
# FineTuneJobs and FineTuneSweeps: Kopf watches them and patches metadata
# (finalizer, progress annotations); the operator writes .status through the
# status subresource. A sweep's trials are FineTuneJobs the operator creates
# from the sweep's template (which the API server validated as a FineTuneJob
# spec), patches (a pruned trial's stop annotation, the sweep's suspend, the
# promoted trial's serving) and never deletes: they go with their sweep.
- apiGroups: [kubetune.io]
  resources: [finetunejobs]
  verbs: [get, list, watch, patch, create]
- apiGroups: [kubetune.io]
  resources: [finetunesweeps]
  verbs: [get, list, watch, patch]
- apiGroups: [kubetune.io]
  resources: [finetunejobs/status, finetunesweeps/status]
  verbs: [get, patch]
# Children carry ownerReferences with blockOwnerDeletion, which needs update on
# the owner's finalizers where OwnerReferencesPermissionEnforcement is on.
- apiGroups: [kubetune.io]
  resources: [finetunejobs/finalizers, finetunesweeps/finalizers]
  verbs: [update]
# Children: trainer config, training Jobs, rendezvous/serving Services, vLLM.
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [get, list, watch, create, patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch]
# Trainer pods: phase, termination messages, pod IPs for /metrics polling.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
# A multi-node attempt one of whose pods failed: its other pods are evicted
# (a disruption, which the Job's pod failure policy does not count against
# backoffLimit), so the group restarts together. Eviction, not delete.
- apiGroups: [""]
  resources: [pods/eviction]
  verbs: [create]
# Kueue (spec.queueName): a queued job's Workload says why it waits or was
# preempted (list), and a queued job is suspended through it (patch
# spec.active: Kueue re-admits a Job suspended directly).
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [list, patch]
# Events on FineTuneJobs (ours and Kopf's).
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/* Kopf peering in a namespace (namespaced scope). */}}
{{- define "kubetune.namespacedPeeringRules" -}}
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  resourceNames: [{{ .Values.peering.name | quote }}]
  verbs: [get, patch]
- apiGroups: [kopf.dev]
  resources: [kopfpeerings]
  verbs: [list, watch]
{{- end }}

{{/* Cluster-scoped needs of a cluster-wide Kopf operator. */}}
{{- define "kubetune.clusterRules" -}}
# Kopf discovers and observes CRDs (read-only) to notice our CRD being
# installed or upgraded without a restart.
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [get, list, watch]
{{- if .Values.peering.enabled }}
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  resourceNames: [{{ .Values.peering.name | quote }}]
  verbs: [get, patch]
- apiGroups: [kopf.dev]
  resources: [clusterkopfpeerings]
  verbs: [list, watch]
{{- end }}
{{- end }}

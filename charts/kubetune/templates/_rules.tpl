{{/*
The operator's permissions, in one place so that the ClusterRole (cluster
scope) and each Role (namespaced scope) grant exactly the same namespaced verbs.
Every verb below is used by the operator or by Kopf (docs/helm.md says where);
tests/chart proves with `kubectl auth can-i` that each is granted and that
nothing else is, and runs the operator under the chart's ServiceAccount with no
403. Deliberately absent: reading Secrets' data (only their metadata is asked
for, to check the admin policy's label), pods/exec, pods/log, delete on
anything but a job's own vLLM Deployment and Service (children are
garbage-collected through ownerReferences; a failed multi-node attempt's pods
are evicted), list/watch of what is never watched
(ConfigMaps, Services), and RBAC objects.
*/}}
{{- define "kubetune.namespacedRules" -}}
# FineTuneJobs and FineTuneSweeps: Kopf lists and watches them and patches
# metadata (finalizer, progress annotations); the operator writes .status
# through the status subresource (PATCH only). A sweep's trials are
# FineTuneJobs the operator creates from the sweep's template (get: a trial a
# restarted operator finds already there), patches (a pruned trial's stop
# annotation, the sweep's suspend, the promoted trial's serving) and never
# deletes: they go with their sweep.
- apiGroups: [kubetune.io]
  resources: [finetunejobs]
  verbs: [get, list, watch, patch, create]
- apiGroups: [kubetune.io]
  resources: [finetunesweeps]
  verbs: [list, watch, patch]
- apiGroups: [kubetune.io]
  resources: [finetunejobs/status, finetunesweeps/status]
  verbs: [patch]
# Children carry ownerReferences with blockOwnerDeletion, which needs update on
# the owner's finalizers where OwnerReferencesPermissionEnforcement is on.
- apiGroups: [kubetune.io]
  resources: [finetunejobs/finalizers, finetunesweeps/finalizers]
  verbs: [update]
# Children the operator creates and never watches: the trainer config (patched
# when a suspended job's spec changes) and rendezvous/serving Services (server-
# side applied for serving pools). get: what a create answered 409 for, to
# check that it is ours (its ownerReference) before it is used. delete (vLLM
# Services only, in practice): a job no longer to be served loses its own
# Service, read first and deleted only while it is the one the job owns (uid).
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [services]
  verbs: [get, create, patch, delete]
# Children the operator creates and watches (status comes from them).
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
# Trainer and vLLM pods: phase, termination messages, pod IPs for /metrics polling.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
# A multi-node attempt one of whose pods failed: its other pods are evicted
# (a disruption, which the Job's pod failure policy does not count against
# backoffLimit), so the group restarts together. Eviction, not delete.
- apiGroups: [""]
  resources: [pods/eviction]
  verbs: [create]
# The admin policy's secretLabel: the operator asks for a referenced Secret's
# metadata only (PartialObjectMetadata), before it creates anything. RBAC cannot
# grant metadata alone; the operator could already reach any Secret through the
# Jobs it creates, so this widens nothing, and no list or watch is granted.
- apiGroups: [""]
  resources: [secrets]
  verbs: [get]
# Kueue (spec.queueName): a queued job's Workload says why it waits or was
# preempted (list), and a queued job is suspended through it (patch
# spec.active: Kueue re-admits a Job suspended directly).
- apiGroups: [kueue.x-k8s.io]
  resources: [workloads]
  verbs: [list, patch]
# Events on FineTuneJobs and FineTuneSweeps (ours and Kopf's: core/v1, POST only).
- apiGroups: [""]
  resources: [events]
  verbs: [create]
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

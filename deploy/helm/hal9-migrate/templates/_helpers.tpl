{{/* The objects' name: the release's, or release-chart. */}}
{{- define "hal9-migrate.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "hal9-migrate.serviceAccountName" -}}
{{- default (include "hal9-migrate.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "hal9-migrate.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: daemon
{{- end -}}

{{- define "hal9-migrate.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: hal9-migrate
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/*
What the daemon may do where it acts: exactly the calls of the Kubernetes
driver, the same rules as deploy/kubernetes/rbac.yaml (the chart's test
compares them). The daemon reads from informers: what it reads it also
lists and watches.
*/}}
{{- define "hal9-migrate.rules" -}}
# The two Deployments of a plan: read replicas and readiness; scale them
# by server-side apply (a patch).
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, patch]
# A Deployment an autoscaler targets: scaled to and from zero through its
# scale subresource, and split through the autoscaler's bounds.
- apiGroups: [apps]
  resources: [deployments/scale]
  verbs: [get, update]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch, patch]
# A KEDA ScaledObject on a Deployment: split through its bounds instead
# of the autoscaler KEDA makes from it.
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [get, list, watch, patch]
# The Services behind a route's backends.
- apiGroups: [""]
  resources: [services]
  verbs: [list, watch]
# The route: read the split, write weights and the mirror filter.
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes, grpcroutes]
  verbs: [get, list, watch, patch]
# run and verify jobs.
- apiGroups: [batch]
  resources: [jobs]
  verbs: [create, get, list, watch, delete]
# A job's pod and its logs; a side's pods.
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [pods/log]
  verbs: [get]
# What those pods use, from metrics-server.
- apiGroups: [metrics.k8s.io]
  resources: [pods]
  verbs: [list]
# Feature flags: the <plan>-flags ConfigMap.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, patch]
# An Event on both Deployments for every change.
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end -}}

{{/* The daemon's configuration file, leader election filled in. */}}
{{- define "hal9-migrate.config" -}}
{{- $cfg := deepCopy .Values.config -}}
{{- $k := deepCopy (default dict $cfg.kubernetes) -}}
{{- $le := dict "enabled" .Values.leaderElection.enabled "name" (include "hal9-migrate.fullname" .) "leaseDuration" .Values.leaderElection.leaseDuration "renewDeadline" .Values.leaderElection.renewDeadline "retryPeriod" .Values.leaderElection.retryPeriod -}}
{{- $_ := set $k "leaderElection" $le -}}
{{- if .Values.sharding.enabled -}}
{{- $sh := dict "enabled" true "shards" .Values.sharding.shards "name" (include "hal9-migrate.fullname" .) "leaseDuration" .Values.sharding.leaseDuration "renewDeadline" .Values.sharding.renewDeadline "retryPeriod" .Values.sharding.retryPeriod -}}
{{- $_ := set $k "sharding" $sh -}}
{{- end -}}
{{- $_ := set $cfg "kubernetes" $k -}}
{{- toYaml $cfg -}}
{{- end -}}

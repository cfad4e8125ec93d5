{{/* Chart name, at most 63 characters. */}}
{{- define "gemma-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Prefix of every object name: the release name, unless it already contains the chart name. */}}
{{- define "gemma-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "gemma-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "gemma-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "gemma-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "gemma-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: gemma-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "gemma-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "gemma-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* repository@digest when a digest is set, else repository:tag (tag defaults to appVersion). */}}
{{- define "gemma-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/*
RBAC rules for the namespaced objects the operator reconciles. Used by the ClusterRole
(cluster-wide watch) or by one Role per watched namespace.
*/}}
{{- define "gemma-operator.namespacedRules" -}}
# The custom resource: watched, patched (kopf's finalizer and annotations), status reported.
- apiGroups: ["gemma.dev"]
  resources: ["gemmadeployments"]
  verbs: ["get", "list", "watch", "patch", "update"]
- apiGroups: ["gemma.dev"]
  resources: ["gemmadeployments/status"]
  verbs: ["get", "patch", "update"]
# Children, server-side applied with owner references (garbage collection deletes them).
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "create", "patch", "update"]
# Events explaining decisions, on the GemmaDeployment (kopf posts core/v1 events).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
# Only to check that spec.hfTokenSecretRef names an existing Secret: get by name, never list or watch.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end -}}

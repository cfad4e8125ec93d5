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

{{/* The (Cluster)KopfPeering the pods meet in: one per release, so two releases never elect one leader. */}}
{{- define "gemma-operator.peeringName" -}}
{{- default (include "gemma-operator.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/*
A rule the values schema cannot word: helm prints a failed schema rule as
"maximum: got 2, want 1", without naming the value to set.
*/}}
{{- define "gemma-operator.checkReplicas" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.peering.enabled) -}}
{{- fail (printf "replicaCount is %d, and more than one operator pod needs peering.enabled=true: without leader election (kopf peering) every pod would reconcile the same resources. Install kopf's peering CRDs (files/kopf-peering-crds.yaml) and set peering.enabled=true, or set replicaCount=1." (int .Values.replicaCount)) -}}
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
{{- define "gemma-operator.cacheDefaults" -}}
{{- $cache := dict -}}
{{- range $key, $value := .Values.cache -}}
{{- if $value }}{{ $_ := set $cache $key $value }}{{ end -}}
{{- end -}}
{{- toJson $cache -}}
{{- end -}}

{{- define "gemma-operator.namespacedRules" -}}
# Exactly the requests the operator sends (tests/integration/test_rbac.py derives them), plus
# one grant that admission checks (gemmadeployments/finalizers, at the end).
# The custom resource: listed and watched, read by name before re-creating a child, and its
# status reported with merge patches (kopf keeps no state on it: no patch of the resource).
- apiGroups: ["gemma.dev"]
  resources: ["gemmadeployments"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["gemma.dev"]
  resources: ["gemmadeployments/status"]
  verbs: ["patch"]
# Children: watched (indices), server-side applied with owner references. An apply that creates
# the object needs create too; garbage collection deletes them, so no delete.
# With gateway.enabled, delete too: the endpoint picker's Deployment and Service (NAME-epp), once
# spec.gateway is removed.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch"{{ if .Values.gateway.enabled }}, "delete"{{ end }}]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch"{{ if .Values.gateway.enabled }}, "delete"{{ end }}]
# Optional children: the PodDisruptionBudget (two replicas or more) and the autoscaler's HPA,
# watched (the HPA's conditions reach the status) and applied; deleted by the operator once the
# spec no longer needs them (replicas down to one, autoscaling off).
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Autoscaling with KEDA, and the metrics collector(s) models.metricsCollector allows: applied and
# deleted; not watched, but listed on the resync (per namespace in use) to repair hand edits.
- apiGroups: ["keda.sh"]
  resources: ["scaledobjects"]
  verbs: ["list", "create", "patch", "delete"]
{{- if ne .Values.models.metricsCollector "ServiceMonitor" }}
- apiGroups: ["monitoring.googleapis.com"]
  resources: ["podmonitorings"]
  verbs: ["list", "create", "patch", "delete"]
{{- end }}
{{- if ne .Values.models.metricsCollector "PodMonitoring" }}
- apiGroups: ["monitoring.coreos.com"]
  resources: ["servicemonitors"]
  verbs: ["list", "create", "patch", "delete"]
{{- end }}
{{- if .Values.gateway.enabled }}
# spec.gateway (Inference Gateway): the InferencePool, the HTTPRoute, and the endpoint picker's
# ServiceAccount, Role, RoleBinding and ConfigMap: applied and deleted; not watched: read again on
# the resync to repair hand edits and deletions. The picker's own objects (always-served core and
# RBAC kinds) are read back by name: get, never list. The InferencePool and HTTPRoute stay listed
# (label selector: the operator's own) per namespace in use: for a CRD the list's 404 says the kind
# is no longer served (the owner re-plans on discovery) where a get's 404 could not tell that from a
# deletion; and RBAC's escalation check needs list on InferencePools anyway (below).
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["httproutes"]
  verbs: ["list", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["get", "create", "patch", "delete"]
# (get on ConfigMaps: granted below, for chat templates, in every install)
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["create", "patch", "delete"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "create", "patch", "delete"]
# Never requested: RBAC's escalation check lets the operator create the picker's Role (read pods
# and InferencePools) and bind it only when it holds those permissions itself.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get"]
- apiGroups: ["inference.networking.k8s.io"]
  resources: ["inferencepools"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["inference.networking.x-k8s.io"]
  resources: ["inferenceobjectives", "inferencemodelrewrites"]
  verbs: ["get", "list", "watch"]
{{- if .Values.gateway.readGateways }}
# gateway.readGateways: the Gateway a resource attaches to, by name, for its address (status.endpoint).
- apiGroups: ["gateway.networking.k8s.io"]
  resources: ["gateways"]
  verbs: ["get"]
{{- end }}
{{- end }}
# Cache objects (spec.cache pvc/gcsfuse): watched, applied once, owner references patched as
# deployments join or leave a shared claim, deleted by the last one that stops using it.
- apiGroups: [""]
  resources: ["persistentvolumeclaims"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Events explaining decisions, on the GemmaDeployment (core/v1, always new ones).
# Events explaining decisions, on the GemmaDeployment (core/v1, always new ones); listed by field
# selector for one model pod the scheduler cannot place, to quote the cluster autoscaler.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "list"]
# The model pods (a label selector: the operator's own), for what blocks them: never written.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# spec.chatTemplate.configMapRef: the ConfigMap holding a user's chat template, read by name on each
# reconcile of its owner and again on the resync, to roll the model pods when the template changes.
# Never listed or watched: a cluster's ConfigMaps are many, and only the few templates name matter.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
{{- if .Values.secretCheck.enabled }}
# secretCheck.enabled: the early check that spec.hfTokenSecretRef names an existing Secret, by name
# and metadata only; never list or watch.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
{{- end }}
# Never requested: the OwnerReferencesPermissionEnforcement admission plugin (OpenShift, some
# hardened clusters) refuses a child whose owner reference sets blockOwnerDeletion unless its
# sender may update the owner's finalizers.
- apiGroups: ["gemma.dev"]
  resources: ["gemmadeployments/finalizers"]
  verbs: ["update"]
{{- end -}}

{{/* The objects' name: fullnameOverride, else the release name if it contains the chart's name, else both. */}}
{{- define "gpt-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels of every object, as manifests/base's kustomization sets them (no Helm labels: the same objects). */}}
{{- define "gpt-operator.labels" -}}
app.kubernetes.io/part-of: gpt-operator
{{- end -}}

{{/* The pods' label: the Deployment's selector, the anti-affinity and the PodMonitor select on it. */}}
{{- define "gpt-operator.selectorLabels" -}}
app.kubernetes.io/name: gpt-operator
{{- end -}}

{{/* The rules on namespaced objects: a ClusterRole's when watching every namespace, else each Role's. */}}
{{- define "gpt-operator.namespacedRules" -}}
- apiGroups: [serving.gpt-operator.dev]
  resources: [gptdeployments]
  verbs: [get, list, watch, patch]
- apiGroups: [serving.gpt-operator.dev]
  resources: [gptdeployments/status]
  verbs: [get, patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [services, configmaps, persistentvolumeclaims]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [monitoring.coreos.com]
  resources: [servicemonitors]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [keda.sh]
  resources: [scaledobjects]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [gateway.networking.k8s.io]
  resources: [httproutes]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end -}}

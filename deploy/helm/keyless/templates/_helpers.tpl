{{/*
keyless's objects: fixed names (keyless, keyless-*) as `keyless k8s manifests` renders them,
one label, no Helm bookkeeping labels (tests/k8s/test_helm.py holds the chart's objects equal
to keyless's own render()).
*/}}

{{- define "keyless.labels" -}}
app.kubernetes.io/name: keyless
{{- end }}

{{/* metadata for a namespaced object: (list $ "name") */}}
{{- define "keyless.metadata" -}}
{{- $root := index . 0 -}}
name: {{ index . 1 }}
namespace: {{ $root.Release.Namespace }}
labels:
  {{- include "keyless.labels" $root | nindent 2 }}
{{- end }}

{{/* metadata for a cluster-scoped object: (list $ "name") */}}
{{- define "keyless.clusterMetadata" -}}
name: {{ index . 1 }}
labels:
  {{- include "keyless.labels" (index . 0) | nindent 2 }}
{{- end }}

{{/* The URL pods reach keyless at, without a trailing slash. */}}
{{- define "keyless.url" -}}
{{- with .Values.publicUrl -}}
{{- trimSuffix "/" . -}}
{{- else -}}
https://keyless.{{ .Release.Namespace }}.svc
{{- end -}}
{{- end }}

{{- define "keyless.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "keyless.replicas" -}}
{{- if .Values.replicas -}}
{{ .Values.replicas }}
{{- else if .Values.postgresql.enabled -}}
3
{{- else -}}
1
{{- end -}}
{{- end }}

{{/* An HTTPS probe on the named port "https": (list "/path" periodSeconds failureThreshold) */}}
{{- define "keyless.probe" -}}
httpGet:
  path: {{ index . 0 }}
  port: https
  scheme: HTTPS
periodSeconds: {{ index . 1 }}
failureThreshold: {{ index . 2 }}
{{- end }}

{{/* The rules that tie values together, refused as `keyless k8s manifests` refuses them. */}}
{{- define "keyless.validate" -}}
{{- $w := .Values.webhook -}}
{{- if and (not $w.clientAuth) $w.clientCA -}}
{{- fail "webhook.clientCA conflicts with webhook.clientAuth=false" -}}
{{- end -}}
{{- if and (not $w.clientAuth) (not $w.sources) -}}
{{- fail "webhook.clientAuth=false needs webhook.sources (the API server's CIDRs)" -}}
{{- end -}}
{{- if and $w.clientAuth $w.sources -}}
{{- fail "webhook.sources needs webhook.clientAuth=false (with client authentication the listener checks the API server's certificate instead)" -}}
{{- end -}}
{{- range $w.sources -}}
{{- if hasSuffix "/0" . -}}
{{- fail (printf "webhook.sources %s would let every pod in" .) -}}
{{- end -}}
{{- end -}}
{{- range $name := list "KEYLESS_DATA_DIR" "KEYLESS_PUBLIC_URL" "KEYLESS_DATABASE" "KEYLESS_ROOT_KEY_FILE" -}}
{{- if hasKey $.Values.extraEnv $name -}}
{{- fail (printf "extraEnv.%s is set by the chart itself" $name) -}}
{{- end -}}
{{- end -}}
{{- if and .Values.ca.workloadNamespaces (not .Values.ca.bundle) -}}
{{- fail "ca.workloadNamespaces needs ca.bundle (the keyless-ca ConfigMaps' content)" -}}
{{- end -}}
{{- end }}

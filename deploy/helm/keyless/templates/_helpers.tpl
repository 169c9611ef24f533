{{/*
keyless's objects: fixed names (keyless, keyless-*) as `keyless k8s manifests` renders them,
one label, no Helm bookkeeping labels (tests/k8s/test_helm.py holds the chart's objects equal
to keyless's own render()).
*/}}

{{- define "keyless.labels" -}}
app.kubernetes.io/name: keyless
{{- end }}

{{/* metadata of a namespaced object: (list $ "name") or (list $ "name" "namespace") */}}
{{- define "keyless.metadata" -}}
{{- $root := index . 0 -}}
name: {{ index . 1 }}
namespace: {{ if gt (len .) 2 }}{{ index . 2 }}{{ else }}{{ $root.Release.Namespace }}{{ end }}
labels:
  {{- include "keyless.labels" $root | nindent 2 }}
{{- end }}

{{/* metadata of a cluster-scoped object: (list $ "name") */}}
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

{{- define "keyless.vaultDomain" -}}
{{ .Values.vaultsNamespace }}.svc
{{- end }}

{{/* The names the serving certificate carries, as keyless issues them itself (JSON list). */}}
{{- define "keyless.dnsNames" -}}
{{- $ns := .Release.Namespace -}}
{{- $domain := include "keyless.vaultDomain" . -}}
{{- $host := (urlParse (include "keyless.url" .)).hostname | lower -}}
{{- list "keyless" (printf "keyless.%s" $ns) (printf "keyless.%s.svc" $ns) (printf "keyless.%s.svc.cluster.local" $ns) $host $domain (printf "*.%s" $domain) | uniq | toJson -}}
{{- end }}

{{- define "keyless.image" -}}
{{- .Values.image | default (printf "keyless:%s" .Chart.AppVersion) -}}
{{- end }}

{{- define "keyless.replicas" -}}
{{- if .Values.replicas -}}
{{ .Values.replicas }}
{{- else if eq .Values.storage "postgresql" -}}
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

{{/* A Role or ClusterRole and its binding to keyless's service account:
     (dict "root" $ "kind" "Role" "name" "n" "namespace" "ns" "rules" "<YAML list>") */}}
{{- define "keyless.role" -}}
{{- $root := .root -}}
{{- range $kind := list .kind (printf "%sBinding" .kind) }}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: {{ $kind }}
metadata:
  {{- if eq $.kind "Role" }}
  {{- include "keyless.metadata" (list $root $.name $.namespace) | nindent 2 }}
  {{- else }}
  {{- include "keyless.clusterMetadata" (list $root $.name) | nindent 2 }}
  {{- end }}
{{- if eq $kind $.kind }}
rules:
  {{- $.rules | nindent 2 }}
{{- else }}
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: {{ $.kind }}
  name: {{ $.name }}
subjects:
  - kind: ServiceAccount
    name: keyless
    namespace: {{ $root.Release.Namespace }}
{{- end }}
{{- end }}
{{- end }}

{{/* The rules that tie values together, refused as `keyless k8s manifests` refuses them
     (values.schema.json says the same; this holds where an install skips the schema). */}}
{{- define "keyless.validate" -}}
{{- $w := .Values.webhook -}}
{{- $tls := .Values.tls -}}
{{- if and (not $w.clientAuth) $w.clientCA -}}
{{- fail "webhook.clientCA conflicts with webhook.clientAuth=false" -}}
{{- end -}}
{{- if and (not $w.clientAuth) (not $w.sourceCIDRs) -}}
{{- fail "webhook.clientAuth=false needs webhook.sourceCIDRs (the API server's addresses)" -}}
{{- end -}}
{{- if and $w.clientAuth $w.sourceCIDRs -}}
{{- fail "webhook.sourceCIDRs needs webhook.clientAuth=false" -}}
{{- end -}}
{{- range $w.sourceCIDRs -}}
{{- if hasSuffix "/0" . -}}
{{- fail (printf "webhook.sourceCIDRs %s would let every pod in" .) -}}
{{- end -}}
{{- end -}}
{{- if and $tls.caBundle (ne $tls.mode "secret") -}}
{{- fail (printf "tls.caBundle is for tls.mode=secret (with tls.mode=%s keyless's CA is not known before it runs)" $tls.mode) -}}
{{- end -}}
{{- if and $tls.workloadNamespaces (not $tls.caBundle) -}}
{{- fail "tls.workloadNamespaces needs tls.caBundle (the ConfigMap's content)" -}}
{{- end -}}
{{- if and $tls.certManagerIssuer (ne $tls.mode "cert-manager") -}}
{{- fail "tls.certManagerIssuer is Issuer/NAME or ClusterIssuer/NAME, with tls.mode=cert-manager" -}}
{{- end -}}
{{- with .Values.spiffe.upstreamCA.secretName -}}
{{- if or (gt (len .) 253) (not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" .)) -}}
{{- fail (printf "spiffe.upstreamCA.secretName %q is not a Secret name (a lowercase DNS subdomain, at most 253 characters)" .) -}}
{{- else if has . (list "keyless-tls" "keyless-ca") -}}
{{- fail (printf "spiffe.upstreamCA.secretName %s holds keyless's serving certificate: give the SPIFFE CA its own Secret" .) -}}
{{- end -}}
{{- end -}}
{{- if eq .Values.vaultsNamespace .Release.Namespace -}}
{{- fail "vaultsNamespace must not be the release's namespace: a vault's Service would share keyless's names" -}}
{{- end -}}
{{- range $name := list "KEYLESS_DATA_DIR" "KEYLESS_PUBLIC_URL" "KEYLESS_K8S_NAMESPACE" "KEYLESS_DATABASE" "KEYLESS_ROOT_KEY_FILE" -}}
{{- if hasKey $.Values.extraEnv $name -}}
{{- fail (printf "extraEnv.%s is set by the chart itself" $name) -}}
{{- end -}}
{{- end -}}
{{- end }}

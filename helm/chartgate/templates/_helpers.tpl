{{/*
Names, labels and small pieces shared by the templates.
*/}}

{{- define "chartgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name: "<release>-<chart>", or the release name when it already contains the chart name.
Kept to 54 characters so "-adapter" style suffixes stay within the 63-character label limit.
*/}}
{{- define "chartgate.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "chartgate.adapter.fullname" -}}
{{- printf "%s-adapter" (include "chartgate.fullname" .) }}
{{- end }}

{{- define "chartgate.agent.fullname" -}}
{{- printf "%s-agent" (include "chartgate.fullname" .) }}
{{- end }}

{{- define "chartgate.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "chartgate.labels" -}}
helm.sh/chart: {{ include "chartgate.chart" . }}
{{ include "chartgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: chartgate
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "chartgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "chartgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "chartgate.adapter.selectorLabels" -}}
{{ include "chartgate.selectorLabels" . }}
app.kubernetes.io/component: adapter
{{- end }}

{{- define "chartgate.agent.selectorLabels" -}}
{{ include "chartgate.selectorLabels" . }}
app.kubernetes.io/component: agent
{{- end }}

{{/*
The label that marks a pod as running a Chartgate sidecar; the adapter NetworkPolicy admits only
pods that carry it.
*/}}
{{- define "chartgate.sidecarLabel" -}}
chartgate.io/sidecar: "true"
{{- end }}

{{- define "chartgate.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "chartgate.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The Chartgate image reference: repository@digest when a digest is set, else repository:tag.
*/}}
{{- define "chartgate.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{- define "chartgate.agent.image" -}}
{{- $repo := required "agent.image.repository is required: the image of your agent container (or set agent.enabled=false)" .Values.agent.image.repository }}
{{- if .Values.agent.image.tag }}
{{- printf "%s:%s" $repo .Values.agent.image.tag }}
{{- else }}
{{- $repo }}
{{- end }}
{{- end }}

{{/*
"true" when operators bring their own Rego (policy.files or policy.existingConfigMap), else empty:
then, and only then, a policy ConfigMap is mounted and the sidecar's policy_dir points at it.
Otherwise the sidecar enforces the library shipped in the image (no policy_dir).
*/}}
{{- define "chartgate.policy.custom" -}}
{{- if or .Values.policy.existingConfigMap .Values.policy.files }}true{{ end }}
{{- end }}

{{/* ConfigMap names. */}}
{{- define "chartgate.sidecarConfigName" -}}
{{- printf "%s-sidecar-config" (include "chartgate.fullname" .) }}
{{- end }}

{{- define "chartgate.policyConfigMapName" -}}
{{- default (printf "%s-policy" (include "chartgate.fullname" .)) .Values.policy.existingConfigMap }}
{{- end }}

{{- define "chartgate.policyDataConfigMapName" -}}
{{- default (printf "%s-policy-data" (include "chartgate.fullname" .)) .Values.policy.existingDataConfigMap }}
{{- end }}

{{- define "chartgate.policyDataKey" -}}
{{- if .Values.policy.existingDataConfigMap }}{{ .Values.policy.dataKey }}{{ else }}data.json{{ end }}
{{- end }}

{{- define "chartgate.jwksConfigMapName" -}}
{{- default (printf "%s-jwks" (include "chartgate.fullname" .)) .Values.adapter.jwks.existingConfigMap }}
{{- end }}

{{- define "chartgate.workdirClaimName" -}}
{{- default (printf "%s-sidecar-workdir" (include "chartgate.fullname" .)) .Values.sidecar.persistence.existingClaim }}
{{- end }}

{{/*
The adapter's gRPC address as the sidecar sees it: sidecar.config.adapterTarget, else this
release's adapter Service (same namespace).
*/}}
{{- define "chartgate.adapterTarget" -}}
{{- if .Values.sidecar.config.adapterTarget }}
{{- .Values.sidecar.config.adapterTarget }}
{{- else }}
{{- printf "%s:%d" (include "chartgate.adapter.fullname" .) (int .Values.adapter.service.port) }}
{{- end }}
{{- end }}

{{/*
Container securityContext of the Chartgate containers.
*/}}
{{- define "chartgate.containerSecurityContext" -}}
{{- toYaml .Values.containerSecurityContext }}
{{- end }}

{{/*
Mount paths inside the containers.
*/}}
{{- define "chartgate.paths.workdir" -}}/var/lib/chartgate{{- end }}
{{- define "chartgate.paths.config" -}}/etc/chartgate/config{{- end }}
{{- define "chartgate.paths.policy" -}}/etc/chartgate/policy{{- end }}
{{- define "chartgate.paths.policyData" -}}/etc/chartgate/policy-data{{- end }}
{{- define "chartgate.paths.keys" -}}/etc/chartgate/keys{{- end }}
{{- define "chartgate.paths.consents" -}}/etc/chartgate/consents{{- end }}
{{- define "chartgate.paths.jwks" -}}/etc/chartgate/jwks{{- end }}

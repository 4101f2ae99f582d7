{{/* Names */}}
{{- define "fleetgram.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "fleetgram.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels; call with (dict "ctx" $ "component" "operator") */}}
{{- define "fleetgram.selectorLabels" -}}
app.kubernetes.io/name: {{ include "fleetgram.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "fleetgram.labels" -}}
{{ include "fleetgram.selectorLabels" . }}
app.kubernetes.io/part-of: fleetgram
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Images */}}
{{- define "fleetgram.masterImage" -}}
{{ .Values.image.master.repository }}:{{ .Values.image.master.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "fleetgram.workerImage" -}}
{{ .Values.image.worker.repository }}:{{ .Values.image.worker.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Service accounts */}}
{{- define "fleetgram.serviceAccountName" -}}
{{- printf "%s-%s" (include "fleetgram.fullname" .ctx) .component -}}
{{- end -}}

{{/* Secrets: name and key of each secret value, existing or made by the chart */}}
{{- define "fleetgram.masterTokenSecret" -}}
{{- .Values.telegram.masterToken.existingSecret | default (printf "%s-master-token" (include "fleetgram.fullname" .)) -}}
{{- end -}}
{{- define "fleetgram.masterTokenKey" -}}
{{- if .Values.telegram.masterToken.existingSecret -}}{{ .Values.telegram.masterToken.existingSecretKey | default "token" }}{{- else -}}token{{- end -}}
{{- end -}}

{{/* "true" when an Anthropic API key is configured, else empty. */}}
{{- define "fleetgram.hasApiKey" -}}
{{- if or .Values.anthropic.apiKey.existingSecret .Values.anthropic.apiKey.value -}}true{{- end -}}
{{- end -}}

{{/* "true" when agent workers run on a Claude subscription's OAuth token, else empty. */}}
{{- define "fleetgram.hasOauthToken" -}}
{{- $oauth := (.Values.worker.agent | default dict).oauthToken | default dict -}}
{{- if and (eq (.Values.worker.engine | default "chat") "agent") (or $oauth.existingSecret $oauth.value) -}}true{{- end -}}
{{- end -}}

{{/* The Secret and key holding CLAUDE_CODE_OAUTH_TOKEN. */}}
{{- define "fleetgram.oauthSecret" -}}
{{- $oauth := (.Values.worker.agent | default dict).oauthToken | default dict -}}
{{- $oauth.existingSecret | default (printf "%s-claude-code-oauth" (include "fleetgram.fullname" .)) -}}
{{- end -}}
{{- define "fleetgram.oauthKey" -}}
{{- $oauth := (.Values.worker.agent | default dict).oauthToken | default dict -}}
{{- if $oauth.existingSecret -}}{{ $oauth.existingSecretKey | default "token" }}{{- else -}}token{{- end -}}
{{- end -}}

{{- define "fleetgram.anthropicSecret" -}}
{{- .Values.anthropic.apiKey.existingSecret | default (printf "%s-anthropic" (include "fleetgram.fullname" .)) -}}
{{- end -}}
{{- define "fleetgram.anthropicKey" -}}
{{- if .Values.anthropic.apiKey.existingSecret -}}{{ .Values.anthropic.apiKey.existingSecretKey | default "api-key" }}{{- else -}}api-key{{- end -}}
{{- end -}}

{{- define "fleetgram.databaseSecret" -}}
{{- .Values.database.url.existingSecret | default (printf "%s-database" (include "fleetgram.fullname" .)) -}}
{{- end -}}
{{- define "fleetgram.databaseKey" -}}
{{- if .Values.database.url.existingSecret -}}{{ .Values.database.url.existingSecretKey | default "url" }}{{- else -}}url{{- end -}}
{{- end -}}

{{/* The Secret of worker slot i (0-based): call with (dict "ctx" $ "i" $i "entry" $entry) */}}
{{- define "fleetgram.workerTokenSecret" -}}
{{- if .entry.existingSecret -}}
{{- .entry.existingSecret -}}
{{- else -}}
{{- printf "%s-worker%d-token" (include "fleetgram.fullname" .ctx) (add1 .i) -}}
{{- end -}}
{{- end -}}

{{/* Fail early, with a message, on settings fleetgram cannot run without */}}
{{- define "fleetgram.validate" -}}
{{- if not .Values.telegram.allowedUserIds -}}
{{- fail "telegram.allowedUserIds is empty: fleetgram serves only listed Telegram user ids (fail closed)" -}}
{{- end -}}
{{- if not (or .Values.telegram.masterToken.existingSecret .Values.telegram.masterToken.value) -}}
{{- fail "telegram.masterToken: set existingSecret or value (the master bot's token)" -}}
{{- end -}}
{{- if not .Values.workerTokens -}}
{{- fail "workerTokens is empty: give at least one worker bot token (one Secret per worker slot)" -}}
{{- end -}}
{{- range $i, $entry := .Values.workerTokens -}}
{{- if not (or $entry.existingSecret $entry.value) -}}
{{- fail (printf "workerTokens[%d]: set existingSecret or value" $i) -}}
{{- end -}}
{{- end -}}
{{- if gt (int .Values.scaling.minWorkers) (int .Values.scaling.maxWorkers) -}}
{{- fail "scaling.minWorkers must not exceed scaling.maxWorkers" -}}
{{- end -}}
{{- if not (or (include "fleetgram.hasApiKey" .) (include "fleetgram.hasOauthToken" .)) -}}
{{- fail "anthropic.apiKey: set existingSecret or value (or, with worker.engine agent, worker.agent.oauthToken)" -}}
{{- end -}}
{{- if not (or .Values.database.url.existingSecret .Values.database.url.value) -}}
{{- fail "database.url: set existingSecret or value (postgresql://...)" -}}
{{- end -}}
{{- end -}}

{{/* The environment shared by the operator and the master; call with (dict "ctx" $) */}}
{{- define "fleetgram.commonEnv" -}}
{{- $ := .ctx -}}
- name: FLEETGRAM_MODE
  value: kubernetes
- name: FLEETGRAM_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: FLEETGRAM_POOL
  value: {{ include "fleetgram.fullname" $ }}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "fleetgram.databaseSecret" $ }}
      key: {{ include "fleetgram.databaseKey" $ }}
- name: TELEGRAM_API_URL
  value: {{ $.Values.telegram.apiUrl | quote }}
- name: ALLOWED_USER_IDS
  value: {{ join "," $.Values.telegram.allowedUserIds | quote }}
- name: MASTER_BOT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "fleetgram.masterTokenSecret" $ }}
      key: {{ include "fleetgram.masterTokenKey" $ }}
- name: WORKER_ENGINE
  value: {{ $.Values.worker.engine | default "chat" | quote }}
{{- if include "fleetgram.hasApiKey" $ }}
- name: ANTHROPIC_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "fleetgram.anthropicSecret" $ }}
      key: {{ include "fleetgram.anthropicKey" $ }}
{{- else }}
- name: CLAUDE_CODE_OAUTH_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "fleetgram.oauthSecret" $ }}
      key: {{ include "fleetgram.oauthKey" $ }}
{{- end }}
{{- with $.Values.anthropic.baseUrl }}
- name: ANTHROPIC_BASE_URL
  value: {{ . | quote }}
{{- end }}
- name: CLAUDE_MODEL
  value: {{ $.Values.claude.model | quote }}
- name: CLAUDE_MAX_TOKENS
  value: {{ $.Values.claude.maxTokens | quote }}
- name: METRICS_PORT
  value: {{ ternary $.Values.metrics.port 0 $.Values.metrics.enabled | quote }}
- name: LOG_LEVEL
  value: {{ $.Values.logLevel | quote }}
{{- end -}}

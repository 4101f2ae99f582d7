{{/* Names */}}
{{- define "fleetgram.name" -}}
{{- .Values.nameOverride | default .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* <release>-<name> (or fullnameOverride), at most 50 characters: suffixes such as
"-operator-metrics" must still fit in 63. */}}
{{- define "fleetgram.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := .Values.nameOverride | default .Chart.Name -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
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

{{/* Numbers. Helm reads every number of a values file as a float64, which prints as
1.1111111e+07 from 1e7 up: print whole numbers as integers. Call with the number (or a
string of digits, printed as it is). */}}
{{- define "fleetgram.int" -}}
{{- if kindIs "string" . -}}
{{- . -}}
{{- else if kindIs "invalid" . -}}
{{- else -}}
{{- printf "%d" (int64 .) -}}
{{- end -}}
{{- end -}}

{{/* ALLOWED_USER_IDS: telegram.allowedUserIds (numbers or strings of digits) joined with
commas, each as an integer ("11111111,1234567890", never 1.1111111e+07). Call with $. */}}
{{- define "fleetgram.allowedUserIds" -}}
{{- $ids := list -}}
{{- range .Values.telegram.allowedUserIds -}}
{{- $ids = append $ids (include "fleetgram.int" .) -}}
{{- end -}}
{{- join "," $ids -}}
{{- end -}}

{{/* The first allowed user id, as an integer. Call with $. */}}
{{- define "fleetgram.firstUserId" -}}
{{- include "fleetgram.int" (first .Values.telegram.allowedUserIds) -}}
{{- end -}}

{{/* Images: [registry/]repository, then @digest, or :tag (default: the appVersion).
Call with (dict "ctx" $ "component" "master"|"worker"). */}}
{{- define "fleetgram.image" -}}
{{- $image := index .ctx.Values.image .component -}}
{{- $repository := $image.repository -}}
{{- with .ctx.Values.image.registry -}}
{{- $repository = printf "%s/%s" (trimSuffix "/" .) $repository -}}
{{- end -}}
{{- if $image.digest -}}
{{- printf "%s@%s" $repository $image.digest -}}
{{- else -}}
{{- printf "%s:%s" $repository ($image.tag | default .ctx.Chart.AppVersion) -}}
{{- end -}}
{{- end -}}

{{- define "fleetgram.masterImage" -}}
{{- include "fleetgram.image" (dict "ctx" . "component" "master") -}}
{{- end -}}

{{- define "fleetgram.workerImage" -}}
{{- include "fleetgram.image" (dict "ctx" . "component" "worker") -}}
{{- end -}}

{{/* The ServiceAccount of a component: <component>.serviceAccount.name, or <fullname>-<component>
when the chart creates it, or "default" when it does not. The RoleBindings bind this name.
Call with (dict "ctx" $ "component" "master"|"operator"|"worker"). */}}
{{- define "fleetgram.serviceAccountName" -}}
{{- $values := index .ctx.Values .component | default dict -}}
{{- $sa := $values.serviceAccount | default dict -}}
{{- if (hasKey $sa "create" | ternary $sa.create true) -}}
{{- $sa.name | default (printf "%s-%s" (include "fleetgram.fullname" .ctx) .component) -}}
{{- else -}}
{{- $sa.name | default "default" -}}
{{- end -}}
{{- end -}}

{{/* Whether each worker slot runs as a ServiceAccount of its own (the chart creates the worker
accounts): then RBAC and the worker admission policy can tell the workers apart. */}}
{{- define "fleetgram.workerAccountPerSlot" -}}
{{- $sa := .Values.worker.serviceAccount | default dict -}}
{{- if (hasKey $sa "create" | ternary $sa.create true) -}}true{{- end -}}
{{- end -}}

{{/* The ServiceAccount of worker slot i (0-based): <worker account>-<i+1> when the chart creates
the worker accounts (one per slot), else the one shared account.
Call with (dict "ctx" $ "i" $i). */}}
{{- define "fleetgram.workerSlotAccount" -}}
{{- $base := include "fleetgram.serviceAccountName" (dict "ctx" .ctx "component" "worker") -}}
{{- if include "fleetgram.workerAccountPerSlot" .ctx -}}
{{- printf "%s-%d" $base (add1 .i) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $base -}}
{{- end -}}
{{- end -}}

{{/* The port of a URL: its own, or 443 for https and 80 for http. */}}
{{- define "fleetgram.urlPort" -}}
{{- $url := urlParse . -}}
{{- $host := get $url "host" -}}
{{- if regexMatch ":[0-9]+$" $host -}}
{{- regexFind "[0-9]+$" $host -}}
{{- else if eq (get $url "scheme") "http" -}}
80
{{- else -}}
443
{{- end -}}
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

{{/* How many worker slots the chart provides for: workerTokens' ones, then the spare ones that
/addworker fills (addWorker.spareSlots). Slot i (0-based) is worker{i+1} either way. */}}
{{- define "fleetgram.slotCount" -}}
{{- add (len .Values.workerTokens) (int ((.Values.addWorker | default dict).spareSlots | default 0)) -}}
{{- end -}}

{{/* The Secret the operator writes the token of spare slot i (0-based, over all slots) to. */}}
{{- define "fleetgram.spareTokenSecret" -}}
{{- printf "%s-worker%d-token" (include "fleetgram.fullname" .ctx) (add1 .i) -}}
{{- end -}}

{{/* /addworker's TOKEN_ENCRYPTION_KEY: addWorker.encryptionKey's Secret and key ("" unset). */}}
{{- define "fleetgram.addWorkerKeySecret" -}}
{{- $k := (.Values.addWorker | default dict).encryptionKey | default dict -}}
{{- if $k.existingSecret -}}{{ $k.existingSecret }}{{- else if $k.value -}}{{ printf "%s-addworker-key" (include "fleetgram.fullname" .) }}{{- end -}}
{{- end -}}
{{- define "fleetgram.addWorkerKeyKey" -}}
{{- $k := (.Values.addWorker | default dict).encryptionKey | default dict -}}
{{- if $k.existingSecret -}}{{ $k.existingSecretKey | default "key" }}{{- else -}}key{{- end -}}
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
{{- if and (gt (int ((.Values.addWorker | default dict).spareSlots | default 0)) 0) (not (include "fleetgram.addWorkerKeySecret" .)) -}}
{{- fail "addWorker.encryptionKey: set existingSecret or value (a Fernet key) when addWorker.spareSlots is above 0" -}}
{{- end -}}
{{- if gt (int (include "fleetgram.slotCount" .)) 50 -}}
{{- fail "workerTokens and addWorker.spareSlots together give more than 50 worker slots (a WorkerPool's limit)" -}}
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
{{- if and .Values.metrics.enabled (eq (include "fleetgram.int" .Values.health.port) (include "fleetgram.int" .Values.metrics.port)) -}}
{{- fail "health.port must differ from metrics.port (the health endpoint and metrics are served apart)" -}}
{{- end -}}
{{- end -}}

{{/* The environment of the operator and the master; call with (dict "ctx" $ "component" ...).
Least privilege: neither gets the Anthropic key or the OAuth token (only workers call Claude),
and only the master gets its bot token (the operator reads worker tokens from their Secrets,
by name, only to wake a stopped worker). */}}
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
  value: {{ include "fleetgram.allowedUserIds" $ | quote }}
{{- with include "fleetgram.addWorkerKeySecret" $ }}
- name: TOKEN_ENCRYPTION_KEY
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ include "fleetgram.addWorkerKeyKey" $ }}
{{- end }}
{{- if eq .component "master" }}
- name: MASTER_BOT_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "fleetgram.masterTokenSecret" $ }}
      key: {{ include "fleetgram.masterTokenKey" $ }}
{{- end }}
- name: WORKER_ENGINE
  value: {{ $.Values.worker.engine | default "chat" | quote }}
- name: CLAUDE_MODEL
  value: {{ $.Values.claude.model | quote }}
- name: CLAUDE_MAX_TOKENS
  value: {{ include "fleetgram.int" $.Values.claude.maxTokens | quote }}
- name: METRICS_PORT
  value: {{ include "fleetgram.int" (ternary $.Values.metrics.port 0 $.Values.metrics.enabled) | quote }}
- name: HEALTH_PORT
  value: {{ include "fleetgram.int" $.Values.health.port | quote }}
- name: LOG_LEVEL
  value: {{ $.Values.logLevel | quote }}
{{- end -}}

{{/* The Deployment of the master or the operator: one replica, replaced with Recreate.
Call with (dict "ctx" $ "component" "master"|"operator"). */}}
{{- define "fleetgram.deployment" -}}
{{- $ := .ctx -}}
{{- $c := .component -}}
{{- $v := index $.Values $c -}}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "fleetgram.fullname" $ }}-{{ $c }}
  labels:
    {{- include "fleetgram.labels" (dict "ctx" $ "component" $c) | nindent 4 }}
spec:
  replicas: 1
  strategy:
    type: Recreate
  revisionHistoryLimit: 3
  selector:
    matchLabels:
      {{- include "fleetgram.selectorLabels" (dict "ctx" $ "component" $c) | nindent 6 }}
  template:
    metadata:
      {{- /* podLabels and podAnnotations are added; the chart's own keys win */}}
      labels:
        {{- merge (include "fleetgram.labels" (dict "ctx" $ "component" $c) | fromYaml) ($v.podLabels | default dict) | toYaml | nindent 8 }}
      annotations:
        {{- merge (dict "checksum/values" (toJson $.Values | sha256sum | trunc 16)) ($v.podAnnotations | default dict) | toYaml | nindent 8 }}
    spec:
      serviceAccountName: {{ include "fleetgram.serviceAccountName" (dict "ctx" $ "component" $c) }}
      {{- with $.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.priorityClassName }}
      priorityClassName: {{ . | quote }}
      {{- end }}
      {{- with $v.podSecurityContext }}
      securityContext:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      terminationGracePeriodSeconds: 30
      containers:
        - name: {{ $c }}
          image: {{ include "fleetgram.masterImage" $ }}
          imagePullPolicy: {{ $.Values.image.pullPolicy }}
          command: [fleetgram]
          args: [{{ $c }}]
          env:
            {{- include "fleetgram.commonEnv" (dict "ctx" $ "component" $c) | nindent 12 }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          {{- with $v.envFrom }}
          envFrom:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          ports:
            - name: health
              containerPort: {{ include "fleetgram.int" $.Values.health.port }}
              protocol: TCP
            {{- if $.Values.metrics.enabled }}
            - name: metrics
              containerPort: {{ include "fleetgram.int" $.Values.metrics.port }}
              protocol: TCP
            {{- end }}
          {{- /* The operator serves kopf's liveness endpoint (/healthz) only. */}}
          readinessProbe:
            httpGet:
              path: {{ eq $c "operator" | ternary "/healthz" "/readyz" }}
              port: health
            periodSeconds: 10
            timeoutSeconds: 3
          livenessProbe:
            httpGet:
              path: /healthz
              port: health
            initialDelaySeconds: 30
            periodSeconds: 20
            timeoutSeconds: 3
            failureThreshold: 3
          {{- with $v.securityContext }}
          securityContext:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          {{- with $v.resources }}
          resources:
            {{- toYaml . | nindent 12 }}
          {{- end }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
            {{- with $v.extraVolumeMounts }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
      volumes:
        - name: tmp
          emptyDir: {}
        {{- with $v.extraVolumes }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
{{- end -}}

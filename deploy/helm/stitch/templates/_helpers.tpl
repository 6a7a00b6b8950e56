{{/* The chart's name, or nameOverride. */}}
{{- define "stitch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: fullnameOverride, or RELEASE-stitch (just RELEASE when it contains "stitch"). */}}
{{- define "stitch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "stitch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "stitch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "stitch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "stitch.labels" -}}
helm.sh/chart: {{ include "stitch.chart" . }}
{{ include "stitch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "stitch.imageTag" -}}
{{- default .Chart.AppVersion .Values.image.tag }}
{{- end }}

{{- define "stitch.serviceAccountName" -}}
{{- default (include "stitch.fullname" .) .Values.controller.serviceAccount.name }}
{{- end }}

{{/*
The config parsed, as JSON (include returns text; read it back with fromJson). Rendering fails
on TOML that does not parse: stitch would refuse it too.
*/}}
{{- define "stitch.configJson" -}}
{{- $cfg := fromToml .Values.config }}
{{- if hasKey $cfg "Error" }}
{{- fail (printf "config: not valid TOML: %s" $cfg.Error) }}
{{- end }}
{{- toJson $cfg }}
{{- end }}

{{/* The port of an IP:port listen address ("0.0.0.0:8080", "[::]:8080"). */}}
{{- define "stitch.port" -}}
{{- $port := regexFind "[0-9]+$" . }}
{{- if not $port }}
{{- fail (printf "config: %q has no port" .) }}
{{- end }}
{{- $port }}
{{- end }}

{{/* The proxy's port: that of server.listen[0] (stitch's default 0.0.0.0:8080). */}}
{{- define "stitch.httpPort" -}}
{{- $cfg := include "stitch.configJson" . | fromJson }}
{{- $listen := dig "server" "listen" (list "0.0.0.0:8080") $cfg }}
{{- include "stitch.port" (first $listen) }}
{{- end }}

{{/*
The admin port, from admin.listen. stitch's default (127.0.0.1:9901) is unreachable from the
kubelet and the Datadog Agent, so the address must be on all interfaces.
*/}}
{{- define "stitch.adminPort" -}}
{{- $cfg := include "stitch.configJson" . | fromJson }}
{{- $listen := dig "admin" "listen" "127.0.0.1:9901" $cfg }}
{{- $port := include "stitch.port" $listen }}
{{- $host := trimSuffix (printf ":%s" $port) $listen }}
{{- if not (has $host (list "0.0.0.0" "[::]")) }}
{{- fail (printf "config: admin.listen = %q: the probes (/healthz, /readyz) and the Datadog Agent (/metrics) reach the admin listener from outside the pod; use 0.0.0.0:%s" $listen $port) }}
{{- end }}
{{- $port }}
{{- end }}

{{/*
terminationGracePeriodSeconds: preStop sleep + server.shutdown_grace_seconds +
server.shutdown_timeout_seconds (stitch's defaults 0 and 10) + margin.
*/}}
{{- define "stitch.shutdownGrace" -}}
{{- $cfg := include "stitch.configJson" . | fromJson }}
{{- dig "server" "shutdown_grace_seconds" 0 $cfg | int }}
{{- end }}
{{- define "stitch.shutdownTimeout" -}}
{{- $cfg := include "stitch.configJson" . | fromJson }}
{{- dig "server" "shutdown_timeout_seconds" 10 $cfg | int }}
{{- end }}
{{- define "stitch.terminationGracePeriodSeconds" -}}
{{- add (int .Values.shutdown.preStopSleepSeconds) (include "stitch.shutdownGrace" . | int) (include "stitch.shutdownTimeout" . | int) (int .Values.shutdown.marginSeconds) }}
{{- end }}

{{/*
Names, labels and the pieces every workload shares. The components are those of the
`components` map in values.yaml, plus kafka-topics (the topic Job) and test (`helm test`).
*/}}

{{/* The chart name (nameOverride wins). */}}
{{- define "scaleshop.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fully qualified release name. Truncated to 63 characters (a DNS label); if the release
name already contains the chart name it is used alone (release "scaleshop" -> "scaleshop").
*/}}
{{- define "scaleshop.fullname" -}}
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

{{/* Chart name and version, for the helm.sh/chart label. */}}
{{- define "scaleshop.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The name of one component's objects: <fullname>-<component>. Call with (dict "root" $ "component" "user"). */}}
{{- define "scaleshop.componentName" -}}
{{- printf "%s-%s" (include "scaleshop.fullname" .root) .component | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The deployed components (`components` in values.yaml; one with an `enabled` value only when it
is true) that have every flag of `with` set and, if `workloads` is given, one of those kinds;
sorted, as a JSON list. Use: range $name := include "scaleshop.components" (dict "root" $ "with"
(list "service")) | fromJsonArray.
*/}}
{{- define "scaleshop.components" -}}
{{- $names := list }}
{{- range $name, $component := .root.Values.components }}
{{- $values := index $.root.Values $name }}
{{- $wanted := or (not (hasKey $values "enabled")) $values.enabled }}
{{- range $flag := default (list) $.with }}
{{- $wanted = and $wanted (index $component $flag) }}
{{- end }}
{{- if $.workloads }}
{{- $wanted = and $wanted (has $component.workload $.workloads) }}
{{- end }}
{{- if $wanted }}
{{- $names = append $names $name }}
{{- end }}
{{- end }}
{{- toJson $names }}
{{- end }}

{{/* The port a component serves on (`components` in values.yaml). Call with (dict "root" $ "component" "user"). */}}
{{- define "scaleshop.port" -}}
{{- (index .root.Values.components .component).port | int }}
{{- end }}

{{/* Selector labels of one component (immutable: never add to them). */}}
{{- define "scaleshop.selectorLabels" -}}
app.kubernetes.io/name: {{ include "scaleshop.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* The standard labels of one component's objects. */}}
{{- define "scaleshop.labels" -}}
helm.sh/chart: {{ include "scaleshop.chart" .root }}
{{ include "scaleshop.selectorLabels" . }}
app.kubernetes.io/part-of: scaleshop
{{- if .root.Chart.AppVersion }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
{{- end }}

{{/* Labels of objects that belong to the release as a whole (ConfigMap, Secret, ServiceAccount). */}}
{{- define "scaleshop.releaseLabels" -}}
helm.sh/chart: {{ include "scaleshop.chart" . }}
app.kubernetes.io/name: {{ include "scaleshop.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: scaleshop
{{- if .Chart.AppVersion }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* The service account the application pods run as. */}}
{{- define "scaleshop.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "scaleshop.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* An image reference from {repository, tag}; the tag defaults to the chart's appVersion. */}}
{{- define "scaleshop.imageRef" -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion (toString .image.tag)) }}
{{- end }}

{{/* The one image of the Python services (user, catalog, worker, loadgen). */}}
{{- define "scaleshop.appImage" -}}
{{- include "scaleshop.imageRef" (dict "root" . "image" .Values.image) }}
{{- end }}

{{/* In-cluster DNS name of a Service: <name>.<namespace>.svc.<clusterDomain>. */}}
{{- define "scaleshop.serviceHost" -}}
{{- printf "%s.%s.svc.%s" (include "scaleshop.componentName" .) .root.Release.Namespace .root.Values.clusterDomain }}
{{- end }}

{{/* MONGODB_URL: the in-cluster StatefulSet, else externalMongodbUrl (required then). */}}
{{- define "scaleshop.mongodbUrl" -}}
{{- if .Values.mongodb.enabled }}
{{- $ctx := dict "root" . "component" "mongodb" }}
{{- printf "mongodb://%s:%s/" (include "scaleshop.serviceHost" $ctx) (include "scaleshop.port" $ctx) }}
{{- else }}
{{- required "mongodb.enabled=false needs externalMongodbUrl (e.g. mongodb://user:pass@host:27017/)" .Values.externalMongodbUrl }}
{{- end }}
{{- end }}

{{/* MEMCACHED_SERVERS: the in-cluster Deployment, else externalMemcachedServers (required then). */}}
{{- define "scaleshop.memcachedServers" -}}
{{- if .Values.memcached.enabled }}
{{- $ctx := dict "root" . "component" "memcached" }}
{{- printf "%s:%s" (include "scaleshop.serviceHost" $ctx) (include "scaleshop.port" $ctx) }}
{{- else }}
{{- required "memcached.enabled=false needs externalMemcachedServers (comma-separated host:port)" .Values.externalMemcachedServers }}
{{- end }}
{{- end }}

{{/* KAFKA_BOOTSTRAP_SERVERS: the in-cluster StatefulSet, else externalKafkaBootstrapServers (required then). */}}
{{- define "scaleshop.kafkaBootstrapServers" -}}
{{- if .Values.kafka.enabled }}
{{- $ctx := dict "root" . "component" "kafka" }}
{{- printf "%s:%s" (include "scaleshop.serviceHost" $ctx) (include "scaleshop.port" $ctx) }}
{{- else }}
{{- required "kafka.enabled=false needs externalKafkaBootstrapServers (comma-separated host:port)" .Values.externalKafkaBootstrapServers }}
{{- end }}
{{- end }}

{{/* USER_SERVICE_URL: the user Service (other services read public profiles there). */}}
{{- define "scaleshop.userServiceUrl" -}}
{{- printf "http://%s:%d" (include "scaleshop.serviceHost" (dict "root" . "component" "user")) (int .Values.user.service.port) }}
{{- end }}

{{/* The gateway's in-cluster URL (helm test, loadgen, NOTES). */}}
{{- define "scaleshop.gatewayUrl" -}}
{{- printf "http://%s:%d" (include "scaleshop.serviceHost" (dict "root" . "component" "gateway")) (int .Values.gateway.service.port) }}
{{- end }}

{{/* The Secret that holds AUTH_SECRET: an existing one, or the chart's own. */}}
{{- define "scaleshop.authSecretName" -}}
{{- default (printf "%s-auth" (include "scaleshop.fullname" .)) .Values.auth.existingSecret }}
{{- end }}

{{/*
Pod security context: non-root with a numeric uid (so the kubelet can verify it),
the runtime's default seccomp profile. Call with (dict "uid" 10001 "fsGroup" true).
*/}}
{{- define "scaleshop.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
{{- if .fsGroup }}
fsGroup: {{ .uid }}
fsGroupChangePolicy: OnRootMismatch
{{- end }}
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* Container security context: read-only root filesystem, no privilege escalation, no capabilities. */}}
{{- define "scaleshop.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/* A preStop hook that keeps the container serving while endpoints and the gateway forget it. */}}
{{- define "scaleshop.preStopSleep" -}}
lifecycle:
  preStop:
    exec:
      command: ["sleep", "{{ . }}"]
{{- end }}

{{/* nodeSelector, affinity, tolerations, topologySpreadConstraints of a component's values. */}}
{{- define "scaleshop.scheduling" -}}
{{- with .nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- end }}

{{/* Image pull secrets of the release. */}}
{{- define "scaleshop.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/*
The settings of one Python service: the release's `config` with the service's own `config`
over it and, while a loadgen Job is part of the release, loadgen.rateLimits over both
(env name -> value, as JSON). Call with (dict "root" $ "component" "user").
*/}}
{{- define "scaleshop.settings" -}}
{{- $own := (index .root.Values .component).config | default (dict) }}
{{- $settings := mergeOverwrite (deepCopy .root.Values.config) (deepCopy $own) }}
{{- if .root.Values.loadgen.enabled }}
{{- $settings = mergeOverwrite $settings (deepCopy .root.Values.loadgen.rateLimits) }}
{{- end }}
{{- toJson $settings }}
{{- end }}

{{/* A setting's value as the environment spells it (YAML numbers arrive as floats). */}}
{{- define "scaleshop.envValue" -}}
{{- if kindIs "float64" . }}{{ . | int64 }}{{ else }}{{ . }}{{ end }}
{{- end }}

{{/* Fail early on values the schema cannot express. */}}
{{- define "scaleshop.validate" -}}
{{- range $c := include "scaleshop.components" (dict "root" $ "with" (list "scalable")) | fromJsonArray }}
{{- $v := index $.Values $c }}
{{- if and $v.autoscaling.enabled (lt (int $v.autoscaling.maxReplicas) (int $v.autoscaling.minReplicas)) }}
{{- fail (printf "%s.autoscaling.maxReplicas (%d) must be >= %s.autoscaling.minReplicas (%d)" $c (int $v.autoscaling.maxReplicas) $c (int $v.autoscaling.minReplicas)) }}
{{- end }}
{{- if hasKey $v "preStopSleepSeconds" }}
{{- $drain := int $v.preStopSleepSeconds }}
{{- if (index $.Values.components $c).service }}
{{- $settings := include "scaleshop.settings" (dict "root" $ "component" $c) | fromJson }}
{{- $drain = add $drain (int $settings.GUNICORN_GRACEFUL_TIMEOUT) }}
{{- end }}
{{- if le (int $v.terminationGracePeriodSeconds) $drain }}
{{- fail (printf "%s.terminationGracePeriodSeconds (%d) must be larger than preStopSleepSeconds plus gunicorn's GUNICORN_GRACEFUL_TIMEOUT (%d s): in-flight requests would be killed" $c (int $v.terminationGracePeriodSeconds) $drain) }}
{{- end }}
{{- end }}
{{- end }}
{{- $gatewayBytes := mul (int .Values.gateway.maxBodyMb) 1048576 }}
{{- range $c := include "scaleshop.components" (dict "root" $ "with" (list "http")) | fromJsonArray }}
{{- $settings := include "scaleshop.settings" (dict "root" $ "component" $c) | fromJson }}
{{- range $key := list "MAX_BODY_BYTES" "MAX_IMPORT_BYTES" }}
{{- if gt (int (index $settings $key)) (int $gatewayBytes) }}
{{- fail (printf "%s: %s (%d) is larger than the gateway accepts (gateway.maxBodyMb=%d MiB): raise gateway.maxBodyMb" $c $key (int (index $settings $key)) (int $.Values.gateway.maxBodyMb)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}

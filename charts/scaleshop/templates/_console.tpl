{{/*
The lab console's facts that more than one template reads (templates/console.yaml,
templates/networkpolicy.yaml, files/nginx.conf), written once.
*/}}

{{/*
The "host:port" the gateway's /console/ route goes to: gateway.consoleUpstream when set (the local
stack's loopback console), else the release's console Service when console.enabled, else empty
(no route).
*/}}
{{- define "scaleshop.console.upstream" -}}
{{- if .Values.gateway.consoleUpstream }}
{{- .Values.gateway.consoleUpstream }}
{{- else if .Values.console.enabled }}
{{- $ctx := dict "root" . "component" "console" }}
{{- printf "%s:%s" (include "scaleshop.serviceHost" $ctx) (include "scaleshop.port" $ctx) }}
{{- end }}
{{- end }}

{{/* Does the console read the release's own Prometheus (console.prometheusUrl empty)? "true" or "". */}}
{{- define "scaleshop.console.readsReleasePrometheus" -}}
{{- if and .Values.console.enabled (not .Values.console.prometheusUrl) }}true{{ end }}
{{- end }}

{{/* The console's PROMETHEUS_URL: console.prometheusUrl, else the release's Prometheus, which must then be on. */}}
{{- define "scaleshop.console.prometheusUrl" -}}
{{- if .Values.console.prometheusUrl }}
{{- .Values.console.prometheusUrl }}
{{- else if .Values.monitoring.prometheus.enabled }}
{{- include "scaleshop.monitoring.prometheusUrl" . }}
{{- else }}
{{- fail "console.enabled needs a Prometheus for its panels: set monitoring.prometheus.enabled=true (the release's own) or console.prometheusUrl (one elsewhere)" }}
{{- end }}
{{- end }}

{{/*
The Job the console copies for each load run (ConfigMap <release>-console-load-job, as JSON): one
`python -m loadgen run` against the gateway, with the release's default service account (no
token) and the hardening of every pod of the release. The console fills in args,
metadata.annotations and spec.activeDeadlineSeconds; Kubernetes completes the name.
*/}}
{{- define "scaleshop.console.loadJob" -}}
{{- $c := .Values.console }}
{{- $ctx := dict "root" . "component" "console-load" }}
apiVersion: batch/v1
kind: Job
metadata:
  generateName: {{ printf "%s-" (include "scaleshop.componentName" $ctx) }}
  labels:
    {{- include "scaleshop.labels" $ctx | nindent 4 }}
spec:
  backoffLimit: 0
  ttlSecondsAfterFinished: 600
  template:
    metadata:
      labels:
        {{- include "scaleshop.labels" $ctx | nindent 8 }}
    spec:
      restartPolicy: Never
      serviceAccountName: {{ include "scaleshop.serviceAccountName" . }}
      automountServiceAccountToken: false
      enableServiceLinks: false
      securityContext:
        {{- include "scaleshop.podSecurityContext" (dict "uid" $c.runAsUser) | nindent 8 }}
      {{- with (include "scaleshop.imagePullSecrets" .) }}{{ . | nindent 6 }}{{- end }}
      containers:
        - name: loadgen
          image: {{ include "scaleshop.appImage" . | quote }}
          imagePullPolicy: {{ .Values.image.pullPolicy }}
          command: ["python", "-m", "loadgen", "run"]
          args: []
          env:
            - name: HOME
              value: /tmp
          resources:
            {{- toYaml $c.load.resources | nindent 12 }}
          securityContext:
            {{- include "scaleshop.containerSecurityContext" (dict "uid" $c.runAsUser) | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
      volumes:
        - name: tmp
          emptyDir:
            sizeLimit: 64Mi
      {{- with (include "scaleshop.scheduling" $c) }}{{ . | nindent 6 }}{{- end }}
{{- end }}

{{/*
What the release's Prometheus (files/prometheus.yml) and the Prometheus Operator's PodMonitor
(templates/prometheus-podmonitor.yaml) both do to a scraped pod, written once, in Prometheus'
own spelling (the PodMonitor converts the keys to the Operator's camelCase).
*/}}

{{/*
The labels every target gets, those of the local stack's targets (stack/servers.py): `service`,
the pod's component (user, catalog, worker), and `replica`, the pod's name.
*/}}
{{- define "scaleshop.monitoring.targetRelabelings" -}}
- source_labels: [__meta_kubernetes_pod_label_app_kubernetes_io_component]
  target_label: service
- source_labels: [__meta_kubernetes_pod_name]
  target_label: replica
{{- end }}

{{/*
The services label their series with `service` too, the same value as the target's label:
Prometheus keeps the target's and would add theirs as `exported_service`.
*/}}
{{- define "scaleshop.monitoring.metricRelabelings" -}}
- regex: exported_service
  action: labeldrop
{{- end }}

{{/* A list of relabel configs in the Operator's spelling (source_labels -> sourceLabels). */}}
{{- define "scaleshop.monitoring.operatorSpelling" -}}
{{- $out := list }}
{{- range $rule := . | fromYamlArray }}
{{- $converted := dict }}
{{- range $key, $value := $rule }}
{{- $_ := set $converted (camelcase $key | untitle) $value }}
{{- end }}
{{- $out = append $out $converted }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/* The components Prometheus scrapes (those with `service`: user, catalog, worker). */}}
{{- define "scaleshop.monitoring.scraped" -}}
{{- include "scaleshop.components" (dict "root" . "with" (list "service")) }}
{{- end }}

{{/* The release's Prometheus (its Service): Grafana's default datasource and the lab console's. */}}
{{- define "scaleshop.monitoring.prometheusUrl" -}}
{{- printf "http://%s:%v" (include "scaleshop.componentName" (dict "root" . "component" "prometheus")) .Values.monitoring.prometheus.service.port }}
{{- end }}

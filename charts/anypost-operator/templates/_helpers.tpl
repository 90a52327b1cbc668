{{- define "anypost.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "anypost.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "anypost.labels" -}}
app.kubernetes.io/name: {{ include "anypost.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "anypost.selectorLabels" -}}
app.kubernetes.io/name: {{ include "anypost.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- /* The labels of one component's pods: controller or dns. */ -}}
{{- define "anypost.componentLabels" -}}
{{ include "anypost.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- /* The ServiceAccount of one component: <name>-controller or <name>-dns. */ -}}
{{- define "anypost.componentServiceAccount" -}}
{{- if .root.Values.serviceAccount.create -}}
{{- printf "%s-%s" (default (include "anypost.fullname" .root) .root.Values.serviceAccount.name) .component | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- default "default" (get .root.Values.serviceAccount (printf "%sName" .component)) -}}
{{- end -}}
{{- end -}}

{{- /* The flags every component takes: the zone, where the identity lives, the
     SendingDomains it manages, the claim policy, logs and HTTP. */ -}}
{{- define "anypost.commonArgs" -}}
{{- $zone := .Values.zone -}}
- --zone={{ $zone.name }}
- --mx-host={{ $zone.mxHost }}
- --spf-include={{ $zone.spfInclude }}
- --tracking-host={{ $zone.trackingHost }}
- --record-ttl={{ $zone.recordTtl }}
- --zone-backend={{ $zone.backend }}
- --http-listen=0.0.0.0:{{ .Values.metrics.port }}
- --log-format={{ .Values.logFormat }}
{{- range $zone.nameservers }}
- --nameserver={{ . }}
{{- end }}
{{- range $zone.nameserverAddresses }}
- --nameserver-address={{ . }}
{{- end }}
{{- with $zone.soaContact }}
- --soa-contact={{ . }}
{{- end }}
{{- with .Values.selector }}
- --selector={{ . }}
{{- end }}
{{- with .Values.claimScope }}
- --claim-scope={{ . }}
{{- end }}
{{- if include "anypost.claimPolicy" . }}
- --claim-policy=/etc/anypost/policy/policy.yaml
{{- end }}
{{- end -}}

{{- /* Non-empty when the chart renders a claim policy. */ -}}
{{- define "anypost.claimPolicy" -}}
{{- if or .Values.claimPolicy.rules (eq .Values.claimPolicy.otherDomains "deny") -}}true{{- end -}}
{{- end -}}

{{- /* Environment every component gets. */ -}}
{{- define "anypost.env" -}}
- name: POD_NAME
  valueFrom: { fieldRef: { fieldPath: metadata.name } }
- name: ANYPOST_NAMESPACE
  valueFrom: { fieldRef: { fieldPath: metadata.namespace } }
{{- end -}}

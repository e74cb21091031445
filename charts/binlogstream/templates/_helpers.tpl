{{- define "binlogstream.fullname" -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "binlogstream.labels" -}}
app.kubernetes.io/name: binlogstream-operator
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "binlogstream.selectorLabels" -}}
app.kubernetes.io/name: binlogstream-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "binlogstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "binlogstream.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

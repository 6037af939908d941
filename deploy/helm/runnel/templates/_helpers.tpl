{{/* Names, labels and the addresses every runneld needs. */}}

{{- define "runnel.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Fullname. Kept to 50 characters: pod names add "-<ordinal>", the StatefulSet
controller adds a revision-hash label of 11 more, and label values stop at 63.
*/}}
{{- define "runnel.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "runnel.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "runnel.headlessName" -}}
{{- printf "%s-peers" (include "runnel.fullname" .) -}}
{{- end -}}

{{- define "runnel.selectorLabels" -}}
app.kubernetes.io/name: {{ include "runnel.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "runnel.labels" -}}
helm.sh/chart: {{ include "runnel.chart" . }}
{{ include "runnel.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: runnel
{{- end -}}

{{- define "runnel.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "runnel.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "runnel.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* Stable DNS name of the pod with ordinal $i: <fullname>-<i>.<headless>.<ns>.svc.<domain> */}}
{{- define "runnel.podHost" -}}
{{- $ctx := index . 0 -}}
{{- $i := index . 1 -}}
{{- printf "%s-%d.%s.%s.svc.%s" (include "runnel.fullname" $ctx) $i (include "runnel.headlessName" $ctx) $ctx.Release.Namespace $ctx.Values.clusterDomain -}}
{{- end -}}

{{/* --initial-cluster: node id = ordinal + 1, for the first initialVoters pods. */}}
{{- define "runnel.initialCluster" -}}
{{- $members := list -}}
{{- range $i := until (int .Values.initialVoters) -}}
{{- $members = append $members (printf "%d=%s:%d" (add1 $i) (include "runnel.podHost" (list $ $i)) (int $.Values.ports.grpc)) -}}
{{- end -}}
{{- join "," $members -}}
{{- end -}}

{{/* --join: the client Service, which only routes to Ready members. */}}
{{- define "runnel.joinAddress" -}}
{{- printf "%s.%s.svc.%s:%d" (include "runnel.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.ports.grpc) -}}
{{- end -}}

{{/* Rules the schema cannot express across fields. */}}
{{- define "runnel.validate" -}}
{{- if gt (int .Values.initialVoters) (int .Values.replicaCount) -}}
{{- fail (printf "initialVoters (%d) must not exceed replicaCount (%d): the meta voters are pods 0..initialVoters-1, and scaling below them would remove a voter" (int .Values.initialVoters) (int .Values.replicaCount)) -}}
{{- end -}}
{{- if le (int .Values.scaleDown.terminationGracePeriodSeconds) (int .Values.scaleDown.shutdownReserveSeconds) -}}
{{- fail "scaleDown.terminationGracePeriodSeconds must be larger than scaleDown.shutdownReserveSeconds" -}}
{{- end -}}
{{- if hasKey .Values.runneld.labels "zone" -}}
{{- fail "runneld.labels.zone: the zone label comes from zones.enabled (the pod's topology label); do not set it by hand" -}}
{{- end -}}
{{- end -}}

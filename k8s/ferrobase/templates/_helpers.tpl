{{/*
Helpers shared by every Ferrobase component.

Component-level helpers take a dict: (dict "root" $ "component" "auth"), where
"component" is both the component's name and its key in values.yaml.
*/}}

{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "ferrobase.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-qualified name that every object name starts with. */}}
{{- define "ferrobase.fullname" -}}
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

{{/* Name of a component's objects, e.g. "ferrobase-gateway". */}}
{{- define "ferrobase.componentName" -}}
{{- printf "%s-%s" (include "ferrobase.fullname" .root | trunc 50 | trimSuffix "-") .component }}
{{- end }}

{{- define "ferrobase.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object of the release. */}}
{{- define "ferrobase.labels" -}}
helm.sh/chart: {{ include "ferrobase.chart" . }}
app.kubernetes.io/name: {{ include "ferrobase.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: ferrobase
{{- end }}

{{/* Selector labels of one component (immutable once deployed). */}}
{{- define "ferrobase.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferrobase.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Full labels of one component's objects. */}}
{{- define "ferrobase.componentLabels" -}}
{{ include "ferrobase.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "ferrobase.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ferrobase.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The existing Secret holding jwtSecret, dbUrl and redisUrl. Rendering fails
while it is not set: the chart has no default secret.
*/}}
{{- define "ferrobase.secretName" -}}
{{- required "secrets.existingSecret is required: create a Secret with the keys jwtSecret, dbUrl and redisUrl (see values.yaml) and pass its name" .Values.secrets.existingSecret }}
{{- end }}

{{/* An env entry read from the existing Secret: (dict "root" $ "name" "FERROBASE_X" "key" "dbUrl"). */}}
{{- define "ferrobase.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "ferrobase.secretName" .root }}
      key: {{ index .root.Values.secrets.keys .key | required (printf "secrets.keys.%s is required" .key) }}
{{- end }}

{{/*
An env entry read from the existing Secret when it holds the key, else left
unset: (dict "root" $ "name" "FERROBASE_X" "key" "jwtKeys"). An empty key
name in values leaves the entry out.
*/}}
{{- define "ferrobase.optionalSecretEnv" -}}
{{- with index .root.Values.secrets.keys .key -}}
- name: {{ $.name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "ferrobase.secretName" $.root }}
      key: {{ . }}
      optional: true
{{- end }}
{{- end }}

{{/* Image reference of one component. */}}
{{- define "ferrobase.image" -}}
{{- $values := index .root.Values .component }}
{{- $tag := $values.image.tag | default .root.Values.image.tag | default .root.Chart.AppVersion }}
{{- printf "%s:%s" $values.image.repository $tag }}
{{- end }}

{{/* gRPC URL of a service for the gateway, e.g. http://ferrobase-auth:50051. */}}
{{- define "ferrobase.grpcUrl" -}}
{{- $values := index .root.Values .component }}
{{- printf "http://%s:%v" (include "ferrobase.componentName" .) $values.grpcPort }}
{{- end }}

{{/* ConfigMap data common to every process (docs/configuration.md). */}}
{{- define "ferrobase.commonConfig" -}}
FERROBASE_LOG_FORMAT: {{ .root.Values.config.logFormat | quote }}
RUST_LOG: {{ .root.Values.config.rustLog | quote }}
FERROBASE_METRICS_ADDR: {{ ternary (printf "0.0.0.0:%v" .root.Values.metrics.port) "off" .root.Values.metrics.enabled | quote }}
FERROBASE_SHUTDOWN_GRACE_MS: {{ .root.Values.config.shutdownGraceMs | quote }}
OTEL_SERVICE_NAME: {{ printf "ferrobase-%s" .component | quote }}
{{- with .root.Values.config.otlpEndpoint }}
OTEL_EXPORTER_OTLP_ENDPOINT: {{ . | quote }}
{{- end }}
{{- end }}

{{/*
Pod annotations of one component: the checksum of its ConfigMap (so a
config change rolls the pods), Prometheus scrape hints, and user annotations.
*/}}
{{- define "ferrobase.podAnnotations" -}}
{{- $values := index .root.Values .component -}}
checksum/config: {{ include (printf "%s/%s/configmap.yaml" .root.Template.BasePath .component) .root | sha256sum }}
{{- if and .root.Values.metrics.enabled .root.Values.metrics.scrapeAnnotations }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .root.Values.metrics.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- with $values.podAnnotations }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Probe timings of one component: the shared ones with its overrides. */}}
{{- define "ferrobase.probeTimings" -}}
{{- $values := index .root.Values .component }}
{{- toYaml (mergeOverwrite (deepCopy .root.Values.probes) ($values.probes | default dict)) }}
{{- end }}

{{/* Pod-level settings shared by every component's Deployment. */}}
{{- define "ferrobase.podSpecCommon" -}}
{{- $values := index .root.Values .component -}}
serviceAccountName: {{ include "ferrobase.serviceAccountName" .root }}
automountServiceAccountToken: false
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  {{- toYaml .root.Values.podSecurityContext | nindent 2 }}
terminationGracePeriodSeconds: {{ $values.terminationGracePeriodSeconds }}
{{- if .root.Values.spreadAcrossNodes }}
topologySpreadConstraints:
  - maxSkew: 1
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "ferrobase.selectorLabels" . | nindent 8 }}
{{- end }}
{{- with $values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  - name: tmp
    emptyDir:
      sizeLimit: 64Mi
{{- end }}

{{/* HorizontalPodAutoscaler of one component, when enabled. */}}
{{- define "ferrobase.hpa" -}}
{{- $values := index .root.Values .component }}
{{- if $values.autoscaling.enabled }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "ferrobase.componentName" . }}
  labels:
    {{- include "ferrobase.componentLabels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "ferrobase.componentName" . }}
  minReplicas: {{ $values.autoscaling.minReplicas }}
  maxReplicas: {{ $values.autoscaling.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $values.autoscaling.targetCPUUtilizationPercentage }}
{{- end }}
{{- end }}

{{/* PodDisruptionBudget of one component, when enabled. */}}
{{- define "ferrobase.pdb" -}}
{{- $values := index .root.Values .component }}
{{- if $values.podDisruptionBudget.enabled }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "ferrobase.componentName" . }}
  labels:
    {{- include "ferrobase.componentLabels" . | nindent 4 }}
spec:
  maxUnavailable: {{ $values.podDisruptionBudget.maxUnavailable }}
  selector:
    matchLabels:
      {{- include "ferrobase.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end }}

{{/*
A `helm test` pod running one shell script in the test image:
(dict "root" $ "component" "auth" "script" "...").
*/}}
{{- define "ferrobase.testPod" -}}
apiVersion: v1
kind: Pod
metadata:
  name: {{ include "ferrobase.componentName" . }}-test
  labels:
    {{- include "ferrobase.labels" .root | nindent 4 }}
    {{- /* Not the component's selector labels: its Service must not pick this pod. */}}
    app.kubernetes.io/component: {{ .component }}-test
  annotations:
    helm.sh/hook: test
    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
spec:
  restartPolicy: Never
  automountServiceAccountToken: false
  {{- with .root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml .root.Values.podSecurityContext | nindent 4 }}
  containers:
    - name: test
      image: {{ printf "%s:%s" .root.Values.tests.image.repository .root.Values.tests.image.tag | quote }}
      imagePullPolicy: {{ .root.Values.image.pullPolicy }}
      securityContext:
        {{- toYaml .root.Values.securityContext | nindent 8 }}
      command: ["/bin/sh", "-ec"]
      args:
        - {{ .script | quote }}
      resources:
        requests:
          cpu: 10m
          memory: 16Mi
        limits:
          cpu: 100m
          memory: 64Mi
{{- end }}

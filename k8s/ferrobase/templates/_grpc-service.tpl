{{/*
The shape every Ferrobase gRPC service shares (auth and rest now; storage,
realtime and meta later): a ConfigMap, a Deployment, a ClusterIP Service and a
`helm test` pod. A service's directory under templates/ calls these with
(dict "root" $ "component" "<service>") and adds its HPA and PDB.

Services are stateless replicas behind one Service; any replica serves any
call. Each one connects to the external PostgreSQL (dbUrl from the Secret)
and applies its own migrations at start under an advisory lock, so replicas
may start together.
*/}}

{{/*
ConfigMap: the non-secret environment of a gRPC service. An optional "env"
dict in the context adds the service's own variables; an empty value is left
out, so the service applies its default.
*/}}
{{- define "ferrobase.grpcService.configmap" -}}
{{- $values := index .root.Values .component }}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ include "ferrobase.componentName" . }}
  labels:
    {{- include "ferrobase.componentLabels" . | nindent 4 }}
data:
  {{- include "ferrobase.commonConfig" . | nindent 2 }}
  FERROBASE_GRPC_ADDR: {{ printf "0.0.0.0:%v" $values.grpcPort | quote }}
  {{- with $values.config.dbPoolSize }}
  FERROBASE_DB_POOL_SIZE: {{ . | quote }}
  {{- end }}
  {{- range $name, $value := .env | default dict }}
  {{- if ne (toString $value) "" }}
  {{ $name }}: {{ $value | quote }}
  {{- end }}
  {{- end }}
{{- end }}

{{/*
Deployment of a gRPC service, probed with the gRPC health protocol. An
optional "optionalSecretEnv" dict (variable name -> key under secrets.keys)
adds variables read from the Secret only when it holds them.
*/}}
{{- define "ferrobase.grpcService.deployment" -}}
{{- $values := index .root.Values .component }}
{{- $probes := include "ferrobase.probeTimings" . | fromYaml }}
apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include "ferrobase.componentName" . }}
  labels:
    {{- include "ferrobase.componentLabels" . | nindent 4 }}
spec:
  {{- if not $values.autoscaling.enabled }}
  replicas: {{ $values.replicaCount }}
  {{- end }}
  revisionHistoryLimit: 5
  strategy:
    type: RollingUpdate
    rollingUpdate:
      maxUnavailable: 0
      maxSurge: 25%
  selector:
    matchLabels:
      {{- include "ferrobase.selectorLabels" . | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "ferrobase.componentLabels" . | nindent 8 }}
      annotations:
        {{- include "ferrobase.podAnnotations" . | nindent 8 }}
    spec:
      {{- include "ferrobase.podSpecCommon" . | nindent 6 }}
      containers:
        - name: {{ .component }}
          image: {{ include "ferrobase.image" . | quote }}
          imagePullPolicy: {{ .root.Values.image.pullPolicy }}
          securityContext:
            {{- toYaml .root.Values.securityContext | nindent 12 }}
          ports:
            - name: grpc
              containerPort: {{ $values.grpcPort }}
              protocol: TCP
            {{- if .root.Values.metrics.enabled }}
            - name: metrics
              containerPort: {{ .root.Values.metrics.port }}
              protocol: TCP
            {{- end }}
          envFrom:
            - configMapRef:
                name: {{ include "ferrobase.componentName" . }}
          env:
            {{- include "ferrobase.secretEnv" (dict "root" .root "name" "FERROBASE_JWT_SECRET" "key" "jwtSecret") | nindent 12 }}
            {{- include "ferrobase.secretEnv" (dict "root" .root "name" "FERROBASE_DB_URL" "key" "dbUrl") | nindent 12 }}
            {{- range $name, $key := .optionalSecretEnv | default dict }}
            {{- include "ferrobase.optionalSecretEnv" (dict "root" $.root "name" $name "key" $key) | nindent 12 }}
            {{- end }}
            {{- with $values.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          startupProbe:
            grpc:
              port: {{ $values.grpcPort }}
            {{- toYaml $probes.startup | nindent 12 }}
          livenessProbe:
            grpc:
              port: {{ $values.grpcPort }}
            {{- toYaml $probes.liveness | nindent 12 }}
          readinessProbe:
            grpc:
              port: {{ $values.grpcPort }}
            {{- toYaml $probes.readiness | nindent 12 }}
          resources:
            {{- toYaml $values.resources | nindent 12 }}
          volumeMounts:
            - name: tmp
              mountPath: /tmp
{{- end }}

{{/* ClusterIP Service of a gRPC service. */}}
{{- define "ferrobase.grpcService.service" -}}
{{- $values := index .root.Values .component }}
apiVersion: v1
kind: Service
metadata:
  name: {{ include "ferrobase.componentName" . }}
  labels:
    {{- include "ferrobase.componentLabels" . | nindent 4 }}
  {{- with $values.service.annotations }}
  annotations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
spec:
  type: ClusterIP
  selector:
    {{- include "ferrobase.selectorLabels" . | nindent 4 }}
  ports:
    - name: grpc
      port: {{ $values.grpcPort }}
      targetPort: grpc
      protocol: TCP
    {{- if .root.Values.metrics.enabled }}
    - name: metrics
      port: {{ .root.Values.metrics.port }}
      targetPort: metrics
      protocol: TCP
    {{- end }}
{{- end }}

{{/*
`helm test` pod of a gRPC service: one grpc.health.v1.Health/Check call over
HTTP/2 cleartext, expecting the framed reply SERVING (00 00000002 08 01).
*/}}
{{- define "ferrobase.grpcService.test" -}}
{{- $url := printf "%s/grpc.health.v1.Health/Check" (include "ferrobase.grpcUrl" .) }}
{{- $script := printf `reply=$(printf '\000\000\000\000\000' | curl -sS --max-time 10 --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' --data-binary @- %s | od -An -tx1 | tr -d ' \n'); echo "health reply: $reply"; test "$reply" = 00000000020801` $url }}
{{- include "ferrobase.testPod" (dict "root" .root "component" .component "script" $script) }}
{{- end }}

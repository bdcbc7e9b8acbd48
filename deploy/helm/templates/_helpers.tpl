{{/*
The role descriptions (files/roles.json, generated from roles/ by hack/gen.sh):
each role's flags, ports, health checks, the data-directory files it reads
and its requests. The templates here add only the Kubernetes wiring.
*/}}
{{- define "kubesplit.roles" -}}
{{- .Files.Get "files/roles.json" -}}
{{- end -}}

{{/* The values key of a role. */}}
{{- define "kubesplit.valuesKey" -}}
{{- if eq . "tunnel-gateway" -}}gateway{{- else -}}{{ . }}{{- end -}}
{{- end -}}

{{- define "kubesplit.labels" -}}
app.kubernetes.io/name: kubesplit
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ .root.Chart.Name }}-{{ .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "kubesplit.selector" -}}
app.kubernetes.io/name: kubesplit
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* image: dict root, repository, tag (the role's own, may be empty) */}}
{{- define "kubesplit.image" -}}
{{- $tag := .tag | default .root.Values.image.tag | default .root.Chart.AppVersion -}}
{{- printf "%s%s:%s" .root.Values.image.registry .repository $tag -}}
{{- end -}}

{{/* "true" when the release sits behind a shared SNI router (gateway.sni.host), else empty. */}}
{{- define "kubesplit.sni" -}}
{{- if ((.Values.gateway.sni | default dict).host) -}}true{{- end -}}
{{- end -}}

{{/*
The public address the init Job is given: gateway.sni.host (the apiserver
is kubernetes.HOST there, on the router's port), gateway.address, or the
public Service's.
*/}}
{{- define "kubesplit.publicAddressArgs" -}}
{{- if include "kubesplit.sni" . -}}
- --public-address
- {{ .Values.gateway.sni.host | quote }}
- --public-api-port
- {{ .Values.gateway.sni.port | quote }}
- --server-name
- {{ printf "kubernetes.%s" .Values.gateway.sni.host | quote }}
{{- else if .Values.gateway.address -}}
- --public-address
- {{ .Values.gateway.address | quote }}
{{- else if or (eq .Values.gateway.service.type "LoadBalancer") .Values.gateway.service.externalIPs -}}
- --public-address-from-service
- tunnel-gateway-public
{{- else -}}
{{- fail (printf "gateway.service.type %s has no address of its own: set gateway.address to the IP or name nodes reach it at (a node's address for NodePort), or use type LoadBalancer" .Values.gateway.service.type) -}}
{{- end -}}
{{- end -}}

{{/*
The apiserver's port at the public address: the public Service's api port
(its node port with NodePort). The apiservers listen on it too (their
--secure-port): the kubernetes Service's endpoint is the advertised
address with the apiserver's own port, and pods on the nodes reach that
through the public Service.
*/}}
{{- define "kubesplit.publicAPIPort" -}}
{{- $all := include "kubesplit.roles" . | fromJson -}}
{{- if include "kubesplit.sni" . -}}
{{- /* behind an SNI router the endpoint is node-local: the apiserver's own port */ -}}
{{- $all.ports.APIServer -}}
{{- else if eq .Values.gateway.service.type "NodePort" -}}
{{- required "gateway.service.nodePorts.api: with NodePort, fix the api node port (the admin kubeconfig and the kubernetes Service name it)" .Values.gateway.service.nodePorts.api -}}
{{- else -}}
{{- .Values.gateway.service.ports.api | default $all.ports.APIServer -}}
{{- end -}}
{{- end -}}

{{/* The etcd members' peer URLs, NAME=URL,... */}}
{{- define "kubesplit.etcdInitialCluster" -}}
{{- $roles := include "kubesplit.roles" . | fromJson -}}
{{- $peers := list -}}
{{- range $i := until (int .Values.datastore.members) -}}
{{- $peers = append $peers (printf "datastore-%d=https://datastore-%d.datastore-peers:%d" $i $i (int $roles.ports.DatastorePeer)) -}}
{{- end -}}
{{- join "," $peers -}}
{{- end -}}

{{/*
A role's pod template: dict root, name (the role), persistent (mount the
datastore's PVC). The data directory is an emptyDir (roles keep scratch state
there); the files the role reads come from the PKI Secret, read-only: pki/
and config/ as directories, the top-level kubeconfigs one by one.
*/}}
{{- define "kubesplit.podTemplate" -}}
{{- $root := .root -}}
{{- $all := include "kubesplit.roles" $root | fromJson -}}
{{- $r := index $all.roles .name -}}
{{- $v := index $root.Values (include "kubesplit.valuesKey" .name) -}}
{{- $mode := $root.Values.datastore.mode -}}
{{- $args := $r.args -}}
{{- if and $r.modeArgs (hasKey $r.modeArgs $mode) -}}{{- $args = index $r.modeArgs $mode -}}{{- end -}}
{{- $args = concat $args ($v.extraArgs | default list) -}}
{{- $env := list -}}
{{- if and $r.env (hasKey $r.env $mode) -}}{{- $env = index $r.env $mode -}}{{- end -}}
{{- if and (include "kubesplit.sni" $root) $r.sniArgs -}}
{{- $args = concat $r.sniArgs ($v.extraArgs | default list) -}}
{{- $env = concat $env $r.sniEnv -}}
{{- end -}}
metadata:
  labels:
    {{- include "kubesplit.labels" (dict "root" $root "component" .name) | nindent 4 }}
spec:
  automountServiceAccountToken: false
  enableServiceLinks: false
  {{- with $root.Values.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets: {{ toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.nodeSelector }}
  nodeSelector: {{ toYaml . | nindent 4 }}
  {{- end }}
  {{- with $root.Values.tolerations }}
  tolerations: {{ toYaml . | nindent 4 }}
  {{- end }}
  affinity:
    podAntiAffinity:
      preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 100
        podAffinityTerm:
          topologyKey: kubernetes.io/hostname
          labelSelector:
            matchLabels:
              {{- include "kubesplit.selector" (dict "root" $root "component" .name) | nindent 14 }}
  securityContext:
    runAsNonRoot: true
    runAsUser: {{ $all.uid }}
    runAsGroup: {{ $all.uid }}
    fsGroup: {{ $all.uid }}
    seccompProfile: {type: RuntimeDefault}
  terminationGracePeriodSeconds: 30
  {{- $restore := (($root.Values.backup | default dict).restoreFrom) | default "" }}
  {{- if and .persistent $restore (eq $mode "sqlite") }}
  # backup.restoreFrom: the state is replaced by that snapshot before the
  # datastore starts, once (--once: a later start finds it restored already)
  initContainers:
  - name: restore
    image: {{ include "kubesplit.image" (dict "root" $root "repository" $r.repository "tag" $v.image.tag) }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args: [snapshot, restore, --once, --data-dir, {{ $all.dataDir }}, --backend, {{ $mode }}, {{ $restore | quote }}]
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
    volumeMounts:
    - {name: data, mountPath: {{ $all.dataDir }}}
    - {name: tmp, mountPath: /tmp}
    - {name: store, mountPath: {{ $all.dataDir }}/datastore}
    # (writable: SQLite may keep a shared-memory file beside a snapshot it reads)
    - {name: snapshots, mountPath: {{ $all.dataDir }}/snapshots}
  {{- end }}
  containers:
  - name: {{ .name }}
    image: {{ include "kubesplit.image" (dict "root" $root "repository" $r.repository "tag" $v.image.tag) }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args: {{ toJson $args }}
    {{- if $env }}
    env:
    {{- range $env }}
    - name: {{ . }}
      {{- if eq . "POD_NAME" }}
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
      {{- else if eq . "KUBESPLIT_ADVERTISE_ADDRESS" }}
      {{- if include "kubesplit.sni" $root }}
      # every node serves the kubernetes Service's endpoint at this address
      value: {{ $root.Values.gateway.sni.nodeLocalAddress | quote }}
      {{- else if $root.Values.gateway.advertiseAddress }}
      value: {{ $root.Values.gateway.advertiseAddress | quote }}
      {{- else }}
      valueFrom: {secretKeyRef: {name: {{ $root.Values.pki.secretName }}, key: config__public-address}}
      {{- end }}
      {{- else if eq . "KUBESPLIT_API_PORT" }}
      value: {{ include "kubesplit.publicAPIPort" $root | quote }}
      {{- else if eq . "KUBESPLIT_SNI_HOST" }}
      value: {{ $root.Values.gateway.sni.host | quote }}
      {{- else if eq . "KUBESPLIT_NODE_API_ADDRESS" }}
      value: {{ $root.Values.gateway.sni.nodeLocalAddress | quote }}
      {{- else if eq . "KUBESPLIT_ETCD_INITIAL_CLUSTER" }}
      value: {{ include "kubesplit.etcdInitialCluster" $root | quote }}
      {{- else if eq . "KUBESPLIT_DATASTORE_DSN" }}
      valueFrom: {secretKeyRef: {name: {{ required "datastore.external.secretName: name the Secret that holds the DSN" $root.Values.datastore.external.secretName }}, key: {{ $root.Values.datastore.external.secretKey }}}}
      {{- else }}
      {{- fail (printf "files/roles.json: the chart does not know environment variable %s" .) }}
      {{- end }}
    {{- end }}
    {{- end }}
    {{- with $r.ports }}
    ports:
    {{- range . }}
    {{- if and (eq $.name "apiserver") (eq .name "https") }}
    - {name: {{ .name }}, containerPort: {{ include "kubesplit.publicAPIPort" $root }}}
    {{- else }}
    - {name: {{ .name }}, containerPort: {{ .port }}}
    {{- end }}
    {{- end }}
    {{- end }}
    # the role's plain-HTTP health port on the pod's address (health alone
    # is served there): the kubelet's own check, no process in the container
    startupProbe:
      httpGet: {{ toJson $r.live }}
      periodSeconds: 2
      failureThreshold: 150
    livenessProbe:
      httpGet: {{ toJson $r.live }}
      periodSeconds: 10
      timeoutSeconds: 5
      failureThreshold: 6
    readinessProbe:
      httpGet: {{ toJson $r.ready }}
      periodSeconds: 3
      timeoutSeconds: 3
    resources:
      {{- $res := deepCopy (dict "requests" $r.requests) -}}
      {{- $res = mergeOverwrite $res ($v.resources | default dict) }}
      {{- toYaml $res | nindent 6 }}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
    volumeMounts:
    - {name: data, mountPath: {{ $all.dataDir }}}
    - {name: tmp, mountPath: /tmp}
    {{- include "kubesplit.secretMounts" (dict "root" $root "name" .name) | trim | nindent 4 }}
    {{- if .persistent }}
    - {name: store, mountPath: {{ $all.dataDir }}/datastore}
    {{- end }}
  volumes:
  - {name: data, emptyDir: {}}
  - {name: tmp, emptyDir: {}}
  {{- if and .persistent $restore (eq $mode "sqlite") }}
  - {name: snapshots, persistentVolumeClaim: {claimName: datastore-backup}}
  {{- end }}
  {{- include "kubesplit.secretVolumes" (dict "root" $root "name" .name) | trim | nindent 2 }}
{{- end -}}


{{/*
The files a role reads (files/roles.json "reads"), from the PKI Secret:
pki/ and config/ as read-only directories holding just those keys, the
top-level kubeconfigs one by one. dict root, name; or root, name and reads
(the files to mount instead of the role's).
*/}}
{{- define "kubesplit.readsByDir" -}}
{{- $all := include "kubesplit.roles" .root | fromJson -}}
{{- $out := dict "pki" list "config" list "top" list -}}
{{- range (.reads | default (index $all.roles .name).reads) -}}
{{- $dir := "top" -}}
{{- if hasPrefix "pki/" . -}}{{- $dir = "pki" -}}{{- else if hasPrefix "config/" . -}}{{- $dir = "config" -}}{{- end -}}
{{- $_ := set $out $dir (append (get $out $dir) .) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{- define "kubesplit.secretMounts" -}}
{{- $all := include "kubesplit.roles" .root | fromJson -}}
{{- $by := include "kubesplit.readsByDir" . | fromJson -}}
{{- if $by.pki }}
- {name: pki, mountPath: {{ $all.dataDir }}/pki, readOnly: true}
{{- end }}
{{- if $by.config }}
- {name: config, mountPath: {{ $all.dataDir }}/config, readOnly: true}
{{- end }}
{{- range $by.top }}
- {name: top, mountPath: {{ $all.dataDir }}/{{ . }}, subPath: {{ . }}, readOnly: true}
{{- end }}
{{- end -}}

{{- define "kubesplit.secretVolumes" -}}
{{- $root := .root -}}
{{- $by := include "kubesplit.readsByDir" . | fromJson -}}
{{- range $dir := list "pki" "config" "top" }}
{{- if index $by $dir }}
- name: {{ $dir }}
  secret:
    secretName: {{ $root.Values.pki.secretName }}
    defaultMode: 0440
    items:
    {{- range index $by $dir }}
    - {key: {{ replace "/" "__" . }}, path: {{ trimPrefix (printf "%s/" $dir) . }}}
    {{- end }}
{{- end }}
{{- end }}
{{- end -}}

{{/*
The init pod: the Job at every install and upgrade and the renewal CronJob run
the same `kubesplit init --secret` (it renews what is due and keeps the rest).
*/}}
{{- define "kubesplit.initPod" -}}
{{- $all := include "kubesplit.roles" . | fromJson -}}
metadata:
  labels: {{- include "kubesplit.labels" (dict "root" . "component" "init") | nindent 4 }}
spec:
  serviceAccountName: kubesplit-init
  # init puts its host name in the certificates: keep it stable across runs
  hostname: kubesplit-init
  restartPolicy: OnFailure
  enableServiceLinks: false
  {{- with .Values.imagePullSecrets }}
  imagePullSecrets: {{ toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.nodeSelector }}
  nodeSelector: {{ toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.tolerations }}
  tolerations: {{ toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    runAsNonRoot: true
    runAsUser: {{ $all.uid }}
    runAsGroup: {{ $all.uid }}
    seccompProfile: {type: RuntimeDefault}
  containers:
  - name: init
    image: {{ include "kubesplit.image" (dict "root" . "repository" "kubesplit/kubesplit" "tag" .Values.pki.image.tag) }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    args:
    - init
    - --secret
    - {{ .Release.Namespace }}/{{ .Values.pki.secretName }}
    - --internal-server
    - https://apiserver:{{ $all.ports.APIServer }}
    - --node-token
    {{- with (.Values.pki.renewal | default dict).before }}
    - --cert-renew-before={{ . }}
    {{- end }}
    {{- include "kubesplit.publicAddressArgs" . | nindent 4 }}
    {{- if not (include "kubesplit.sni" .) }}
    - --public-api-port
    - {{ include "kubesplit.publicAPIPort" . | quote }}
    {{- end }}
    {{- range .Values.pki.extraSANs }}
    - --apiserver-san={{ . }}
    - --gateway-san={{ . }}
    {{- end }}
    {{- if eq .Values.datastore.mode "etcd" }}
    {{- range $i := until (int .Values.datastore.members) }}
    - --datastore-san=datastore-{{ $i }}.datastore-peers
    {{- end }}
    {{- end }}
    securityContext:
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {drop: [ALL]}
    volumeMounts:
    - {name: tmp, mountPath: /tmp}
  volumes:
  - {name: tmp, emptyDir: {}}
{{- end }}

{{/*
A role's pod template, hashed (dict as for kubesplit.podTemplate). Each role's
object carries it (kubesplit.io/template-sha) so that the next upgrade can
tell which roles it changes.
*/}}
{{- define "kubesplit.templateSHA" -}}
{{- include "kubesplit.podTemplate" . | sha256sum | trunc 16 -}}
{{- end -}}

{{/*
What an upgrade changes, as JSON: "changing", the roles whose pod template
differs from the running object's (or that an unfinished rollout left held),
and "hold", true when there are several (or one left held: the rollout Job
is what releases it). Then the pre-upgrade check pauses
every changed role but the datastore (kubesplit.io/held) before Helm applies
anything, and the post-upgrade rollout Job (rollout.yaml) resumes them one
at a time in the version-skew policy's order; the datastore, never held,
rolls first on Helm's apply. (The chart never renders spec.paused: Helm
does not own the field, so its server-side apply never conflicts with the
Jobs' changes to it.) Without lookup (helm template, lint, install) nothing
changes.
*/}}
{{- define "kubesplit.rollout" -}}
{{- $root := . -}}
{{- $changing := list -}}
{{- $leftover := false -}}
{{- if .Release.IsUpgrade -}}
{{- $stateful := ne .Values.datastore.mode "external" -}}
{{- range $name := list "datastore" "apiserver" "controllers" "scheduler" "tunnel-gateway" -}}
{{- $persistent := and (eq $name "datastore") $stateful -}}
{{- $live := lookup "apps/v1" (ternary "StatefulSet" "Deployment" $persistent) $root.Release.Namespace $name -}}
{{- if $live -}}
{{- $ann := $live.metadata.annotations | default dict -}}
{{- $sha := include "kubesplit.templateSHA" (dict "root" $root "name" $name "persistent" $persistent) -}}
{{- $held := and $live.spec.paused (eq (get $ann "kubesplit.io/held") "true") -}}
{{- if or (ne (get $ann "kubesplit.io/template-sha") $sha) $held -}}
{{- $changing = append $changing $name -}}
{{- end -}}
{{- if $held -}}{{- $leftover = true -}}{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toJson (dict "changing" $changing "hold" (or (gt (len $changing) 1) $leftover)) -}}
{{- end -}}

{{/*
A container printing a role image's version (for the upgrade Jobs):
dict root, name (the container's), image, args (the role's, for
--fake-kubernetes-version).
*/}}
{{- define "kubesplit.versionContainer" -}}
- name: {{ .name }}
  image: {{ .image }}
  imagePullPolicy: {{ .root.Values.image.pullPolicy }}
  args: [--version{{ range .args }}{{ if hasPrefix "--fake-kubernetes-version" . }}, {{ . | quote }}{{ end }}{{ end }}]
  securityContext:
    allowPrivilegeEscalation: false
    readOnlyRootFilesystem: true
    capabilities: {drop: [ALL]}
{{- end -}}

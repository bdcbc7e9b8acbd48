// Package compose renders deploy/compose/docker-compose.yml from the role
// descriptions. The file is checked in (users run `docker compose up`
// without Go); `make verify` fails when it differs from Render's output, and
// hack/gen.sh rewrites it.
package compose

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"text/template"

	"github.com/kubesplit/kubesplit/roles"
)

// Compose variables, with their defaults (the defaults of the release in hack/versions.env).
const (
	tagVar       = "${KUBESPLIT_TAG:-%s}"
	gatewayIPVar = "${KUBESPLIT_GATEWAY_IP:-10.251.0.2}"
	apiPortVar   = "${KUBESPLIT_API_PORT:-6443}"
)

// Render returns the compose file for images tagged defaultTag by default.
func Render(defaultTag string) ([]byte, error) {
	tag := fmt.Sprintf(tagVar, defaultTag)
	w := roles.Wiring{
		Host:           roles.NamedHosts,
		Advertise:      gatewayIPVar,
		RelayAPIServer: true,
		AddonImageTag:  tag,
	}
	var svcs []service
	for _, name := range roles.Names() {
		svcs = append(svcs, service{Role: w.Role(name), Tag: tag})
	}
	data := struct {
		Tag, APIPort, GatewayIP string
		APIServerPort           int
		Roles                   []service
		NodeCommand             string
		RoleUser                string
		DataDir                 string
		LabelRole               string
	}{
		Tag: tag, APIPort: apiPortVar, GatewayIP: gatewayIPVar,
		APIServerPort: roles.DefaultPorts().APIServer,
		Roles:         svcs,
		NodeCommand:   flow(append(w.NodeArgs("/var/lib/kubesplit-join/node-token"), "--node-name-from-dns"), 6),
		RoleUser:      roles.User(),
		DataDir:       roles.DataDir,
		LabelRole:     roles.LabelRole,
	}
	var b bytes.Buffer
	if err := file.Execute(&b, data); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

type service struct {
	roles.Role
	Tag string
}

// Command is the role's flags as a YAML flow sequence, wrapped.
func (s service) Command() string { return flow(s.Args, 6) }

// Test is the health check's command.
func (s service) Test() string {
	return flow([]string{"CMD", roles.Probe, s.Ready.ProbeArg()}, 8)
}

// plain matches scalars YAML reads as the same string unquoted in a flow sequence.
var plain = regexp.MustCompile(`^[A-Za-z/_.-][A-Za-z0-9/_.=-]*$`)

func scalar(s string) string {
	if plain.MatchString(s) && s != "true" && s != "false" && s != "null" {
		return s
	}
	b, _ := json.Marshal(s) // a JSON string is a YAML double-quoted scalar
	return string(b)
}

// flow renders items as [a, b, ...], wrapping lines at 100 columns with
// continuation lines indented by indent spaces; a flag and its value stay
// on one line.
func flow(items []string, indent int) string {
	var units []string
	for i := 0; i < len(items); i++ {
		u := scalar(items[i])
		if strings.HasPrefix(items[i], "--") && i+1 < len(items) && !strings.HasPrefix(items[i+1], "--") {
			i++
			u += ", " + scalar(items[i])
		}
		units = append(units, u)
	}
	var b strings.Builder
	b.WriteString("[")
	col := indent + 10
	for i, u := range units {
		if i > 0 {
			b.WriteString(",")
			if col+len(u)+2 > 100 {
				b.WriteString("\n" + strings.Repeat(" ", indent))
				col = indent
			} else {
				b.WriteString(" ")
				col += 2
			}
		}
		b.WriteString(u)
		col += len(u)
	}
	b.WriteString("]")
	return b.String()
}

var file = template.Must(template.New("compose").Parse(`# Generated from roles/ (the one description of each role) by hack/gen.sh:
# edit roles/ or roles/compose, not this file; make verify checks it.
#
# kubesplit dev cluster: ` + "`make up`" + ` from the repository root (or
# ` + "`docker compose up -d` / `docker-compose up -d`" + ` here, after ` + "`make images`" + `).
#
#   control network: datastore, apiserver, scheduler, controllers, tunnel-gateway
#   edge network:    tunnel-gateway and the nodes (internal: no way out)
#
# Only the gateway is on both, so the apiserver has no route to any node (the
# NAT case): kubelet traffic (logs, exec, port-forward) rides the nodes'
# reverse tunnels, and pods reach the apiserver through the gateway's relay,
# which the apiserver advertises as the ` + "`kubernetes`" + ` Service endpoint.
#
# Nodes run privileged here; where Docker refuses that (some VMs),
# compose.no-privileged.yml grants the capability set that works instead
# (` + "`make up`" + ` picks it automatically). Scale with ` + "`--scale node=N`" + `.
#
# Settings (environment or .env): KUBESPLIT_TAG (image tag), KUBESPLIT_API_PORT
# (host port of the apiserver, on 127.0.0.1), KUBESPLIT_KUBECONFIG_DIR (where
# the admin kubeconfig lands, default ./kubeconfig), KUBESPLIT_EDGE_SUBNET and
# KUBESPLIT_GATEWAY_IP (the node network and the gateway's fixed address on it).

x-role: &role
  restart: unless-stopped
  networks: [control]
  volumes: [data:{{.DataDir}}]
  # the images have no shell: kubesplit-probe GETs each role's plain-HTTP
  # health relay on loopback (--health-address)
  healthcheck: &health
    interval: 3s
    timeout: 3s
    retries: 40
  depends_on:
    init:
      condition: service_completed_successfully

services:
  # One shot: PKI, keys, kubeconfigs and a join token into the data volume
  # (kept on later runs), the admin kubeconfig onto the host, the token into
  # the volume the nodes read.
  init:
    image: kubesplit/kubesplit:{{.Tag}}
    user: "0:0"
    restart: "no"
    hostname: kubesplit-init   # init puts its host name in the certificates; keep it stable
    labels: {{"{"}}{{.LabelRole}}: init}
    network_mode: none
    volumes:
      - data:{{.DataDir}}
      - join:/var/lib/kubesplit-join
      - ${KUBESPLIT_KUBECONFIG_DIR:-./kubeconfig}:/out
    command: [init, --data-dir, {{.DataDir}}, --owner, "{{.RoleUser}}",
      --server, "https://127.0.0.1:{{.APIPort}}", --internal-server, "https://apiserver:{{.APIServerPort}}",
      --copy-admin-kubeconfig, /out/admin.kubeconfig, --copy-node-token, /var/lib/kubesplit-join/node-token]
{{range .Roles}}
  {{.Name}}:
    <<: *role
    image: {{.Repository}}:{{.Tag}}
    labels: {{"{"}}{{$.LabelRole}}: {{.Name}}}
{{- if eq .Name "scheduler"}}
    # started after, and so stopped before, the apiserver: on ` + "`make down`" + `
    # the scheduler and controllers hand their leader leases back while the
    # apiserver still answers, so the next ` + "`make up`" + ` need not wait 15 s for
    # the old leases to expire
{{- end}}
{{- if .After}}
    depends_on:
      init:
        condition: service_completed_successfully
{{- range .After}}
      {{.}}:
        condition: service_started
{{- end}}
{{- end}}
    command: {{.Command}}
{{- if .CPUShares}}
    cpu_shares: {{.CPUShares}}
{{- end}}
{{- if eq .Name "apiserver"}}
    ports: ["127.0.0.1:{{$.APIPort}}:{{$.APIServerPort}}"]
{{- end}}
{{- if eq .Name "tunnel-gateway"}}
    networks:
      control: {}
      edge:
        ipv4_address: {{$.GatewayIP}}
{{- end}}
    healthcheck:
      <<: *health
      test: {{.Test}}
{{end}}
  node:
    image: kubesplit/node:{{.Tag}}
    labels: {{"{"}}{{.LabelRole}}: node}
    restart: unless-stopped
    privileged: true
    init: true
    networks: [edge]
    tmpfs: [/run, /tmp]
    volumes:
      - join:/var/lib/kubesplit-join:ro
      # images from ` + "`make load`" + `, imported by every node at start
      - images:/var/lib/kubesplit-node/images
      # local-path volumes (the local-storage addon), kept across make down/up.
      # One volume for every node: each PVC's directory is named after its
      # unique PV and used only on the node the PV is bound to.
      - storage:/var/lib/kubesplit-storage
    command: {{.NodeCommand}}
    depends_on:
      init:
        condition: service_completed_successfully
      tunnel-gateway:
        condition: service_started

networks:
  control: {}
  edge:
    internal: true
    ipam:
      config:
        - subnet: ${KUBESPLIT_EDGE_SUBNET:-10.251.0.0/24}

volumes:
  data: {}
  join: {}
  images: {}
  storage: {}
`))

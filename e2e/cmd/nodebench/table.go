package main

import (
	"fmt"
	"sort"
	"strings"
)

// printTable prints the rows of the phases that ran.
func printTable(r *result) {
	shares := ""
	if r.GatewayCPUShares != 0 {
		shares = fmt.Sprintf("; gateway --cpu-shares %d", r.GatewayCPUShares)
	}
	fmt.Printf("\nkubesplit node benchmarks (2 node containers behind the tunnel gateway, this machine; phases: %s%s)\n\n", strings.Join(r.Phases, ", "), shares)
	fmt.Printf("| %-72s | %-26s | %-10s |\n", "measure", "value", "target")
	fmt.Printf("|%s|%s|%s|\n", strings.Repeat("-", 74), strings.Repeat("-", 28), strings.Repeat("-", 12))
	row := func(m, v, t string) { fmt.Printf("| %-72s | %-26s | %-10s |\n", m, v, t) }
	ms := func(p50, p99 float64) string { return fmt.Sprintf("%.1f / %.1f ms", p50, p99) }
	has := func(p string) bool { return options{only: r.Phases}.has(p) }
	if has("startup") {
		row(fmt.Sprintf("pod startup, create → Running, %d pods one at a time, p50", r.Pods), fmt.Sprintf("%.0f ms", r.PodStartupSeqP50Ms), "< 1000 ms")
		row("  … p99", fmt.Sprintf("%.0f ms", r.PodStartupSeqP99Ms), "< 2000 ms")
		row(fmt.Sprintf("pod startup, %d pods created in a burst, p50", r.Pods), fmt.Sprintf("%.0f ms", r.PodStartupP50Ms), "")
		row("  … p99", fmt.Sprintf("%.0f ms", r.PodStartupP99Ms), "")
	}
	if has("exec") {
		row(fmt.Sprintf("exec via apiserver+gateway+tunnel, p50 / p99 (%d)", r.Execs), ms(r.ExecTunnelP50Ms, r.ExecTunnelP99Ms), "")
		row("exec via an apiserver with a route to the node (baseline)", ms(r.ExecNoTunnelP50Ms, r.ExecNoTunnelP99Ms), "")
		row("tunnel overhead per exec: p50 difference / paired median", fmt.Sprintf("%.1f / %.1f ms", r.ExecOverheadP50Ms, r.ExecOverheadPairedMs), "< 5 ms")
		row("  its egress dials (to the CONNECT's 200)", r.ExecDialTunnel.String(), "")
		if r.PerDial {
			row("exec via a fresh apiserver, egress relay", ms(r.ExecRelayP50Ms, r.ExecRelayP99Ms), "")
			row("  its tunnel overhead, paired median; its egress dials", fmt.Sprintf("%.1f ms; %s", r.ExecRelayOverheadPairedMs, r.ExecDialRelay), "")
			row("exec via a fresh apiserver, per-dial egress (--egress-relay=false)", ms(r.ExecPerDialP50Ms, r.ExecPerDialP99Ms), "")
			row("  its tunnel overhead, paired median; its egress dials", fmt.Sprintf("%.1f ms; %s", r.ExecPerDialOverheadPairedMs, r.ExecDialPerDial), "")
			row("exec via relay − via per-dial, paired median", fmt.Sprintf("%.1f ms", r.ExecRelayMinusPerDialPairedMs), "")
		}
		row("exec straight to the kubelet, no apiserver", ms(r.ExecDirectP50Ms, r.ExecDirectP99Ms), "")
	}
	if w := r.Webhook; w != nil {
		row(fmt.Sprintf("ConfigMap create with 2 webhooks, via tunnel, p50 / p99 (%d)", w.Calls), ms(w.Tunnel.With.P50Ms, w.Tunnel.With.P99Ms), "")
		row("  the same without webhooks, same apiserver (interleaved)", ms(w.Tunnel.Without.P50Ms, w.Tunnel.Without.P99Ms), "")
		row("the 2 webhook calls add, p50 / p99 (paired median)", ms(w.Tunnel.AddP50Ms, w.Tunnel.AddP99Ms)+fmt.Sprintf(" (%.1f)", w.Tunnel.AddPairedMs), "")
		row("one webhook call adds, p50", fmt.Sprintf("%.1f ms", w.Tunnel.PerCallP50Ms), "< 5 ms")
		for _, a := range []struct {
			name string
			p    *webhookPaths
		}{{"fresh apiserver, egress relay", w.Relay}, {"fresh apiserver, per-dial egress", w.PerDial}} {
			if d := a.p; d != nil {
				row("ConfigMap create with 2 webhooks, "+a.name, ms(d.With.P50Ms, d.With.P99Ms), "")
				row("  the same without webhooks", ms(d.Without.P50Ms, d.Without.P99Ms), "")
				row("  one webhook call adds there, p50", fmt.Sprintf("%.1f ms", d.PerCallP50Ms), "")
			}
		}
		if w.PerDial != nil {
			row("hooked create via relay − via per-dial, paired median", fmt.Sprintf("%.1f ms", w.RelayMinusPerDialPairedMs), "")
		}
		if d := w.Beside; d != nil {
			row("ConfigMap create, 2 webhooks in a container beside the routed apiserver", ms(d.With.P50Ms, d.With.P99Ms), "")
			row("  the same without webhooks, routed apiserver", ms(d.Without.P50Ms, d.Without.P99Ms), "")
			row("  one webhook call adds there (no pod, no tunnel), p50", fmt.Sprintf("%.1f ms", d.PerCallP50Ms), "")
			row("pod + tunnel share of one webhook call, p50 (tunnel − beside)", fmt.Sprintf("%.1f ms", w.Tunnel.PerCallP50Ms-d.PerCallP50Ms), "")
		}
		row("gateway streams to pods opened per hooked create", fmt.Sprintf("%.2f", w.PodStreamsPerCall), "")
		if d := w.Direct; d != nil {
			row("ConfigMap create with 2 webhooks, apiserver routed to the pods", ms(d.With.P50Ms, d.With.P99Ms), "")
			row("  the same without webhooks", ms(d.Without.P50Ms, d.Without.P99Ms), "")
			row("webhooks add there (no tunnel), p50 / p99", ms(d.AddP50Ms, d.AddP99Ms), "")
			row("tunnel cost of the 2 webhook calls (p50 with, tunnel − routed)", fmt.Sprintf("%.1f ms", w.Tunnel.With.P50Ms-d.With.P50Ms), "")
		}
	}
	if has("memory") {
		names := make([]string, 0, len(r.AgentRSSMiB))
		for k := range r.AgentRSSMiB {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			row("node idle RSS: "+k, fmt.Sprintf("%.0f MiB", r.AgentRSSMiB[k]), "")
		}
		row("node idle RSS total", fmt.Sprintf("%.0f MiB", r.AgentRSSTotalMiB), "< 200 MiB")
		for _, p := range r.AddonMemory {
			v := fmt.Sprintf("%.1f MiB (rss %.1f)", p.WorkingSetMiB, p.RSSMiB)
			if p.MetricsAPIMiB > 0 {
				v = fmt.Sprintf("%.1f MiB (API %.1f)", p.WorkingSetMiB, p.MetricsAPIMiB)
			}
			if !p.Ready || p.Restarts > 0 {
				v += fmt.Sprintf(" ready=%v restarts=%d", p.Ready, p.Restarts)
			}
			row("idle working set: kube-system/"+p.Pod, v, "")
		}
	}
	if has("restarts") {
		row(fmt.Sprintf("tunnels back after gateway restart, median of %d", r.GatewayRestartRuns), fmt.Sprintf("%.2f s", r.ReconnectMedianS), "< 5 s")
	}
	row("cluster start (containers) → both nodes Ready", fmt.Sprintf("%.1f s", r.ClusterStartS), "")
	if w := r.Webhook; w != nil {
		fmt.Printf("\nwebhook baseline: %s\n", w.DirectRoute)
	}
	fmt.Println()
}

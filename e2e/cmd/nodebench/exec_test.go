package main

import "testing"

func TestDialStatsFrom(t *testing.T) {
	page := `# HELP apiserver_egress_dialer_dial_duration_seconds [ALPHA] Dial latency histogram in seconds
# TYPE apiserver_egress_dialer_dial_duration_seconds histogram
apiserver_egress_dialer_dial_duration_seconds_bucket{protocol="http-connect",transport="uds",le="0.005"} 9
apiserver_egress_dialer_dial_duration_seconds_bucket{protocol="http-connect",transport="uds",le="0.025"} 10
apiserver_egress_dialer_dial_duration_seconds_bucket{protocol="http-connect",transport="uds",le="+Inf"} 10
apiserver_egress_dialer_dial_duration_seconds_sum{protocol="http-connect",transport="uds"} 0.03
apiserver_egress_dialer_dial_duration_seconds_count{protocol="http-connect",transport="uds"} 10
# TYPE other_total counter
other_total 3
`
	d, err := dialStatsFrom([]byte(page))
	if err != nil {
		t.Fatal(err)
	}
	if d.n != 10 || d.fast != 9 || d.ms < 29.99 || d.ms > 30.01 {
		t.Fatalf("got %+v, want 10 dials, 9 under 5 ms, 30 ms in all", d)
	}
}

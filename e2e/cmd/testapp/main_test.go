package main

import "testing"

func TestServePort(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
		bad  bool
	}{
		{nil, "8080", false},
		{[]string{"--port", "8081"}, "8081", false},
		{[]string{":8081"}, "8081", false},
		{[]string{"8081"}, "", true},
		{[]string{"--port"}, "", true},
		{[]string{"--port", "http"}, "", true},
		{[]string{":0"}, "", true},
		{[]string{":8081", "extra"}, "", true},
	} {
		got, err := servePort(c.args)
		if (err != nil) != c.bad || got != c.want {
			t.Errorf("servePort(%q) = %q, %v", c.args, got, err)
		}
	}
}

// Package benchstat holds what the suite's benchmark commands share: their
// arithmetic, their testcontainers settings and how they keep results.
package benchstat

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/kubesplit/kubesplit/testcluster"
)

// Setup sets testcontainers-go's settings for this machine, unless the
// environment has them (no reaper image to pull, no host guessing), and
// returns the image tag to run: KUBESPLIT_TAG or testcluster's default.
func Setup() string {
	for k, v := range map[string]string{"TESTCONTAINERS_RYUK_DISABLED": "true", "TESTCONTAINERS_HOST_OVERRIDE": "127.0.0.1"} {
		if os.Getenv(k) == "" {
			os.Setenv(k, v)
		}
	}
	if t := os.Getenv("KUBESPLIT_TAG"); t != "" {
		return t
	}
	return testcluster.DefaultTag
}

// WriteJSON writes v, indented, to dir/PREFIX-TIME.json and returns the path.
func WriteJSON(dir, prefix string, v any) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	path := filepath.Join(dir, prefix+"-"+time.Now().UTC().Format("20060102T150405Z")+".json")
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return "", err
	}
	return path, os.WriteFile(path, append(b, '\n'), 0o644)
}

// Median of v (the mean of the middle two for an even count), rounded to 0.1.
func Median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return Round((s[len(s)/2-1] + s[len(s)/2]) / 2)
}

// Round rounds to one decimal.
func Round(f float64) float64 { return float64(int(f*10+0.5)) / 10 }

// Round2 rounds to two decimals (for times of about a second).
func Round2(f float64) float64 { return float64(int(f*100+0.5)) / 100 }

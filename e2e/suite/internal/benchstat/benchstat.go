// Package benchstat holds the arithmetic the suite's benchmark commands share.
package benchstat

import "slices"

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

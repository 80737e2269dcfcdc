package load

import (
	"testing"
	"time"
)

func TestPercentile(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var d []time.Duration
		for _, n := range ns {
			d = append(d, time.Duration(n)*time.Millisecond)
		}
		return d
	}
	for _, tc := range []struct {
		name string
		in   []time.Duration
		q    float64
		want time.Duration
	}{
		{"empty", nil, 0.5, 0},
		{"one", ms(7), 0.99, 7 * time.Millisecond},
		{"median of 4", ms(1, 2, 3, 4), 0.5, 2 * time.Millisecond},
		{"p99 of 100", ms(seq(100)...), 0.99, 99 * time.Millisecond},
		{"p0 is the minimum", ms(5, 6), 0, 5 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percentile(tc.in, tc.q); got != tc.want {
				t.Errorf("Percentile(%v, %v) = %v, want %v", tc.in, tc.q, got, tc.want)
			}
		})
	}
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i + 1
	}
	return s
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		line string
		ok   bool
	}{
		{"result", `{"jsonrpc":"2.0","id":3,"result":{"content":[],"structuredContent":{"connections":1}}}`, true},
		{"tool error", `{"jsonrpc":"2.0","id":3,"result":{"isError":true,"content":[],"structuredContent":{}}}`, false},
		{"protocol error", `{"jsonrpc":"2.0","id":3,"error":{"code":-32601,"message":"no"}}`, false},
		{"no structured content", `{"jsonrpc":"2.0","id":3,"result":{"content":[]}}`, false},
		{"not JSON", `pong`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Check([]byte(tc.line))
			if (err == nil) != tc.ok {
				t.Errorf("Check(%s) = %v, want ok=%v", tc.line, err, tc.ok)
			}
		})
	}
}

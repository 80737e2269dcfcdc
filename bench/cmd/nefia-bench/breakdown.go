package main

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"
)

// A CPU profile's flat time, bucketed by what bounds it: this is the
// "what bounds each figure" column of BENCHMARKS.md, computed from the run's
// own profiles. Buckets are tried in order; the first match wins.
var buckets = []struct {
	name string
	re   *regexp.Regexp
}{
	{"crypto primitives (ECDSA, X25519, SHA, AES-GCM, HMAC)", regexp.MustCompile(`^(crypto/internal|crypto/(ecdsa|ecdh|sha256|sha512|aes|cipher|hmac|hkdf|elliptic|rand|subtle)\.)|p256|P256|x25519|edwards25519|bigmod|nistec|fiat|gcm|aes|sha256block|sha512block`)},
	{"crypto/x509 (parse, chain building)", regexp.MustCompile(`^(crypto/x509|encoding/asn1|vendor/golang.org/x/crypto/cryptobyte|golang.org/x/crypto/cryptobyte)`)},
	{"crypto/tls protocol (messages, key schedule glue, records)", regexp.MustCompile(`^crypto/tls\.`)},
	{"syscalls (read, write, stat, flock, fsync, open, rename, ...)", regexp.MustCompile(`^(syscall\.|internal/runtime/syscall|internal/syscall|golang.org/x/sys/unix\.)`)},
	{"encoding/json", regexp.MustCompile(`^encoding/json\.`)},
	{"logging and formatting (slog, fmt, strconv)", regexp.MustCompile(`^(log/slog|fmt\.|strconv\.|unicode/utf8\.)`)},
	{"runtime: allocation and GC", regexp.MustCompile(`^runtime\.(mallocgc|.*[Ss]weep|.*[Mm]ark|gc|.*[Ss]can|.*[Ss]pan|.*[Hh]eap|nextFree|memclr|.*mcache|.*mcentral|.*pageAlloc|.*HeapBits|typePointers|wbBuf|greyobject|findObject|madvise|sys(Unused|Used|Alloc|Free)|newobject|makeslice|growslice|bulkBarrier|.*[Bb]itmap|spanOf|heapBits|.*gcBits|deductAssistCredit|mProf|profilealloc|.*[Ff]inalizer)`)},
	{"runtime: goroutine stack growth", regexp.MustCompile(`^runtime\.(copystack|adjust|newstack|morestack|step|pcvalue|findfunc|funcspdelta|funcMaxSPDelta|readvarint|getStackMap|.*unwinder|stackalloc|stackfree|stackpool|.*stkframe)`)},
	{"runtime: scheduler, timers, futex, netpoll, memmove", regexp.MustCompile(`^(runtime\.|internal/runtime|sync\.|internal/sync|sync/atomic)`)},
	{"nefia, mcp-go, net, bufio and the rest", regexp.MustCompile(`.`)},
}

type bucket struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	Percent float64 `json:"percent"`
}

// breakdown buckets the flat times of `go tool pprof -top -nodefraction=0`
// output.
func breakdown(top string) []bucket {
	sums := make([]time.Duration, len(buckets))
	var total time.Duration
	for _, line := range strings.Split(top, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasSuffix(f[1], "%") {
			continue
		}
		flat, err := time.ParseDuration(f[0])
		if err != nil {
			if f[0] != "0" {
				continue
			}
			flat = 0
		}
		name := strings.Join(f[5:], " ")
		for i, b := range buckets {
			if b.re.MatchString(name) {
				sums[i] += flat
				break
			}
		}
		total += flat
	}
	var out []bucket
	for i, d := range sums {
		if d == 0 || total == 0 {
			continue
		}
		out = append(out, bucket{Name: buckets[i].name, Seconds: d.Seconds(), Percent: 100 * float64(d) / float64(total)})
	}
	slices.SortFunc(out, func(a, b bucket) int {
		switch {
		case a.Seconds > b.Seconds:
			return -1
		case a.Seconds < b.Seconds:
			return 1
		}
		return 0
	})
	return out
}

func formatBreakdown(bs []bucket) string {
	var parts []string
	for _, b := range bs {
		if b.Percent >= 1 {
			parts = append(parts, fmt.Sprintf("%s %.0f%%", b.Name, b.Percent))
		}
	}
	return strings.Join(parts, "; ")
}

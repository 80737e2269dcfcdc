package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/nefia/nefia/bench/load"
)

// results is everything one run measured; results.json holds it whole and
// results.md the tables made from it.
type results struct {
	Machine    machine       `json:"machine"`
	Smoke      bool          `json:"smoke"`
	Rounds     int           `json:"rounds"`
	Duration   string        `json:"duration_per_cell"`
	Started    time.Time     `json:"started"`
	Finished   time.Time     `json:"finished"`
	Cells      []cell        `json:"cells"`
	Floor      []floorOp     `json:"crypto_floor"`
	FloorExtra []floorOp     `json:"beyond_floor"`
	RevCheck   []revCheck    `json:"revocation_check"`
	RevLatency []revSample   `json:"revocation_to_disconnect"`
	Memory     []memSample   `json:"memory"`
	Startup    []startSample `json:"startup"`
	Profiles   []profile     `json:"profiles,omitempty"`
	ServerLogs []string      `json:"server_log_problems,omitempty"`
	Failures   []string      `json:"failures"`
}

type machine struct {
	NProc       int    `json:"nproc"`
	CPU         string `json:"cpu"`
	Kernel      string `json:"kernel"`
	Go          string `json:"go"`
	OpenSSL     string `json:"openssl,omitempty"`
	Stunnel     string `json:"stunnel,omitempty"`
	Nginx       string `json:"nginx,omitempty"`
	LoadBefore  string `json:"loadavg_before"`
	LoadAfter   string `json:"loadavg_after"`
	MemTotalKiB int64  `json:"mem_total_kib"`
	// Source is the commit the binaries were built from, "+dirty" when the
	// work tree had changes.
	Source string `json:"source,omitempty"`
}

// cell is one measured window: one target, one concurrency, one round.
type cell struct {
	Phase   string  `json:"phase"`
	Target  string  `json:"target"`
	Conc    int     `json:"concurrency"`
	Round   int     `json:"round"`
	Ops     int64   `json:"ops"`
	Errors  int64   `json:"errors"`
	Resumed int64   `json:"resumed"`
	Seconds float64 `json:"seconds"`
	Rate    float64 `json:"rate_per_s"`
	P50us   float64 `json:"p50_us"`
	P99us   float64 `json:"p99_us"`
	// ServerCPUus is the target's user+system CPU per operation (all its
	// processes, /proc/PID/stat), ClientCPUus nefia-bench's own.
	ServerCPUus float64 `json:"server_cpu_us_per_op"`
	// MainCPUus is the target's main process alone (nefia without the
	// upstream servers it runs or forwards to).
	MainCPUus   float64 `json:"main_cpu_us_per_op,omitempty"`
	ClientCPUus float64 `json:"client_cpu_us_per_op"`
	// OtherCores is the CPU everything else on the machine used during the
	// window, in cores (of NProc).
	OtherCores float64 `json:"other_load_cores"`
	Err        string  `json:"error,omitempty"`
	// Offered is an open-loop cell's offered rate (calls/s in total over
	// Conc sessions); Late its calls never sent (load.Result.Late).
	Offered float64 `json:"offered_per_s,omitempty"`
	Late    int64   `json:"late,omitempty"`
}

func (c *cell) fill(r load.Result) {
	c.Ops, c.Errors, c.Resumed = r.Ops, r.Errors, r.Resumed
	c.Seconds = r.Elapsed.Seconds()
	c.Rate = r.Rate()
	c.P50us = us(r.Percentile(0.50))
	c.P99us = us(r.Percentile(0.99))
}

// profile is one CPU profile of the gateway under a hot-path workload.
type profile struct {
	Name      string   `json:"name"`
	Path      string   `json:"path"`
	Breakdown []bucket `json:"breakdown"`
}

type floorOp struct {
	Name  string  `json:"name"`
	CPUus float64 `json:"cpu_us"`
}

type revCheck struct {
	Revoked int     `json:"revoked"`
	CheckUs float64 `json:"check_us"`
	LoadMs  float64 `json:"load_ms"`
	Err     string  `json:"error,omitempty"`
}

type revSample struct {
	Path        string  `json:"path"`
	Revoked     int     `json:"revoked_before"`
	FromStartMs float64 `json:"from_start_ms"`
	FromDoneMs  float64 `json:"from_done_ms"`
}

type memSample struct {
	RSS0          int64   `json:"rss_idle_bytes"`
	RSS50         int64   `json:"rss_50_sessions_bytes"`
	PerSessionKiB float64 `json:"per_session_kib"`
}

type startSample struct {
	AcceptMs float64 `json:"accept_ms"`
	ReadyMs  float64 `json:"ready_ms"`
}

func newResults(o options) *results {
	r := &results{Smoke: o.smoke, Rounds: o.rounds, Duration: o.duration.String(), Started: time.Now().UTC(), Failures: []string{}}
	r.Machine = machine{
		NProc:      runtime.NumCPU(),
		CPU:        cpuModel(),
		Kernel:     strings.TrimSpace(readFile("/proc/sys/kernel/osrelease")),
		Go:         runtime.Version(),
		OpenSSL:    versionLine("openssl", "version"),
		LoadBefore: strings.TrimSpace(readFile("/proc/loadavg")),
		Source:     gitSource(),
	}
	for _, l := range strings.Split(readFile("/proc/meminfo"), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			if f := strings.Fields(v); len(f) > 0 {
				r.Machine.MemTotalKiB, _ = strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return r
}

func (r *results) finish() {
	r.Finished = time.Now().UTC()
	r.Machine.LoadAfter = strings.TrimSpace(readFile("/proc/loadavg"))
}

func (r *results) write(dir string) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(data, '\n'), 0o644); err != nil {
		return err
	}
	var md strings.Builder
	report(&md, r)
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(md.String()), 0o644)
}

// gitSource describes the work tree nefia-bench runs in (bench/run.sh runs
// it from the repository root, which it has just built).
func gitSource() string {
	head, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	src := strings.TrimSpace(string(head))
	if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(st)) > 0 {
		src += "+dirty"
	}
	return src
}

func cpuModel() string {
	for _, l := range strings.Split(readFile("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// rerender rewrites results.md in dir from its results.json (after a change
// of the report's layout, without measuring again) and prints it.
func rerender(args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: nefia-bench report DIR")
	}
	data, err := os.ReadFile(filepath.Join(args[0], "results.json"))
	if err != nil {
		return err
	}
	var r results
	if err := json.Unmarshal(data, &r); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(args[0], "results.json"), err)
	}
	if err := r.write(args[0]); err != nil {
		return err
	}
	report(stdout, &r)
	return nil
}

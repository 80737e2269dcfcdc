// Package proc reads what the benchmarks report about a process from Linux's
// /proc: CPU time (utime+stime), resident memory, and the children of a
// process (nginx's workers), so server cost can be measured from outside
// the server, the same way for nefia, crypto/tls, stunnel and nginx.
package proc

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/PID/stat. Linux has
// reported them in USER_HZ = 100 on every architecture Go supports since
// 2.6 (sysconf(_SC_CLK_TCK)); the resolution is therefore 10 ms, which is
// why every CPU figure is taken over a run of seconds, never per operation.
const clockTick = 10 * time.Millisecond

// CPU returns the user plus system CPU time the process has used so far,
// all threads included (exited threads too).
func CPU(pid int) (time.Duration, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	// Fields after the command name, numbered as in proc(5) minus 3:
	// utime is field 14, stime 15.
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("proc: /proc/%d/stat: bad utime/stime %q %q", pid, f[11], f[12])
	}
	return time.Duration(utime+stime) * clockTick, nil
}

// CPUSum returns the summed CPU time of pids; a process that has gone away
// is an error, because its time would silently drop out of the sum.
func CPUSum(pids []int) (time.Duration, error) {
	var sum time.Duration
	for _, pid := range pids {
		d, err := CPU(pid)
		if err != nil {
			return 0, err
		}
		sum += d
	}
	return sum, nil
}

// Parent returns the parent pid of pid.
func Parent(pid int) (int, error) {
	f, err := statFields(pid)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(f[1])
}

// Children returns the pids whose parent is pid.
func Children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range ents {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if p, err := Parent(n); err == nil && p == pid {
			kids = append(kids, n)
		}
	}
	return kids
}

// statFields returns /proc/PID/stat split after the command name (which may
// contain spaces and parentheses): f[0] is the state, f[1] the ppid.
func statFields(pid int) ([]string, error) {
	data, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return nil, fmt.Errorf("proc: %w", err)
	}
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return nil, fmt.Errorf("proc: /proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return nil, fmt.Errorf("proc: /proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}

// RSS returns the resident set size (VmRSS) of the process in bytes.
func RSS(pid int) (int64, error) {
	return statusKB(pid, "VmRSS:")
}

// statusKB reads one "kB" line of /proc/PID/status.
func statusKB(pid int, key string) (int64, error) {
	f, err := os.Open(filepath.Join("/proc", strconv.Itoa(pid), "status"))
	if err != nil {
		return 0, fmt.Errorf("proc: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, key) {
			continue
		}
		fields := strings.Fields(line[len(key):])
		if len(fields) == 0 {
			break
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			break
		}
		return kb << 10, nil
	}
	return 0, fmt.Errorf("proc: /proc/%d/status has no %s line", pid, key)
}

// Machine is a sample of the whole machine's CPU counters (/proc/stat).
type Machine struct {
	Busy, Total time.Duration
}

// SampleMachine reads the aggregate "cpu" line of /proc/stat. Busy is every
// state but idle and iowait; the difference of two samples, minus the CPU
// of the processes a benchmark knows about, is the load of everything else
// on the machine during the run (other engineers' tests, on a shared box).
func SampleMachine() (Machine, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return Machine{}, fmt.Errorf("proc: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return Machine{}, fmt.Errorf("proc: /proc/stat: unexpected first line %q", line)
	}
	var m Machine
	for i, s := range f[1:] {
		if i >= 8 { // guest time is already counted in user
			break
		}
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return Machine{}, fmt.Errorf("proc: /proc/stat: %w", err)
		}
		d := time.Duration(v) * clockTick
		m.Total += d
		if i != 3 && i != 4 { // idle, iowait
			m.Busy += d
		}
	}
	return m, nil
}

// Sub returns the counters accumulated between o and m.
func (m Machine) Sub(o Machine) Machine {
	return Machine{Busy: m.Busy - o.Busy, Total: m.Total - o.Total}
}

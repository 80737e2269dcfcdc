package etcdtest

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// stopGrace is how long Stop waits for a member to exit on SIGTERM before
// it kills it.
const stopGrace = 10 * time.Second

// member is one etcd process. Its URLs and data directory survive a stop,
// so a restart rejoins the cluster with its data.
type member struct {
	name      string
	dataDir   string
	logPath   string
	clientURL string
	peerURL   string

	cmd  *exec.Cmd
	done chan struct{} // closed once cmd has exited; nil when never started
}

// running reports whether the process was started and has not exited.
func (m *member) running() bool {
	if m.done == nil {
		return false
	}
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// start launches the process with args, its output appended to logPath.
func (m *member) start(bin string, args []string) error {
	logf, err := os.OpenFile(m.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("etcdtest: opening the log of %s: %w", m.name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("etcdtest: starting %s: %w", m.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logf.Close()
		close(done)
	}()
	m.cmd, m.done = cmd, done
	return nil
}

// stop sends sig to the process started as cmd and waits until done is
// closed; after grace (if > 0) it kills. It needs no lock: callers pass
// what they read under the cluster's lock, and a process that has exited
// ignores signals.
func stop(cmd *exec.Cmd, done chan struct{}, sig os.Signal, grace time.Duration) {
	if done == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(sig)
	_ = cmd.Process.Signal(sigCont) // a paused member must act on sig
	if grace > 0 {
		select {
		case <-done:
			return
		case <-time.After(grace):
		}
	}
	_ = cmd.Process.Kill()
	<-done
}

// logTail returns the last n lines of the member's log.
func (m *member) logTail(n int) string {
	b, err := os.ReadFile(m.logPath)
	if err != nil {
		return err.Error()
	}
	lines := bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return string(bytes.Join(lines, []byte("\n")))
}

// portTaken reports whether the member's log says a port was taken by
// someone else between freePorts and etcd's bind.
func (m *member) portTaken() bool {
	b, _ := os.ReadFile(m.logPath)
	return bytes.Contains(b, []byte("address already in use"))
}

// cleanEnv is the test's environment without ETCD_* variables, which etcd
// reads as flags and which would change the cluster under test.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ETCD_") {
			env = append(env, kv)
		}
	}
	return env
}

// freePorts returns n distinct free TCP ports on 127.0.0.1. It holds every
// listener until all are chosen, so the ports are distinct; another process
// can still take one before etcd binds it, which Start retries.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("etcdtest: finding a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// findBinary returns the etcd server binary: opts.Binary, etcd on PATH, or
// Debian's /usr/bin/etcd. Without one it skips, or fails when CI is set.
func findBinary(t testing.TB, bin string) string {
	t.Helper()
	if bin != "" {
		return bin
	}
	if p, err := exec.LookPath("etcd"); err == nil {
		return p
	}
	if fi, err := os.Stat("/usr/bin/etcd"); err == nil && !fi.IsDir() {
		return "/usr/bin/etcd"
	}
	if os.Getenv("CI") != "" {
		t.Fatal("etcd is not installed, and CI is set: .ci/run must install etcd-server")
	}
	t.Skip("etcd not installed: skipping (apt-get install etcd-server; CI installs it)")
	return ""
}

// args is the etcd 3.4 command line of member i.
func (c *Cluster) args(i int) []string {
	m := c.members[i]
	peers := make([]string, len(c.members))
	for j, o := range c.members {
		peers[j] = o.name + "=" + o.peerURL
	}
	a := []string{
		"--name", m.name,
		"--data-dir", m.dataDir,
		"--listen-client-urls", m.clientURL,
		"--advertise-client-urls", m.clientURL,
		"--listen-peer-urls", m.peerURL,
		"--initial-advertise-peer-urls", m.peerURL,
		"--initial-cluster", strings.Join(peers, ","),
		"--initial-cluster-state", "new", // ignored once the data dir exists
		"--initial-cluster-token", c.token,
		"--logger", "zap",
		"--log-outputs", "stderr",
		"--heartbeat-interval", strconv.Itoa(int(c.opts.HeartbeatInterval / time.Millisecond)),
		"--election-timeout", strconv.Itoa(int(c.opts.ElectionTimeout / time.Millisecond)),
	}
	if c.ca != nil {
		a = append(a,
			"--cert-file", c.serverFiles.CertFile,
			"--key-file", c.serverFiles.KeyFile,
			"--trusted-ca-file", c.serverFiles.CAFile,
			"--client-cert-auth",
		)
	}
	return a
}

// newMembers lays out n members under dir with fresh ports.
func newMembers(dir string, n int, scheme string) ([]*member, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("etcdtest: %w", err)
	}
	ports, err := freePorts(2 * n)
	if err != nil {
		return nil, err
	}
	ms := make([]*member, n)
	for i := range ms {
		name := "m" + strconv.Itoa(i)
		ms[i] = &member{
			name:      name,
			dataDir:   filepath.Join(dir, name+".etcd"),
			logPath:   filepath.Join(dir, name+".log"),
			clientURL: fmt.Sprintf("%s://127.0.0.1:%d", scheme, ports[2*i]),
			peerURL:   fmt.Sprintf("http://127.0.0.1:%d", ports[2*i+1]),
		}
	}
	return ms, nil
}

// errExited is returned by a readiness wait when a member's process ended.
var errExited = errors.New("etcdtest: member exited")

// Package lbtest runs a real nginx stream (TCP) load balancer in front of
// backends on loopback, for tests of several nefia gateways behind one
// address (issue 15, README "Running several gateways").
//
// A stream proxy passes TLS through untouched, so each gateway still
// terminates mutual TLS itself and sees the client certificate: the
// deployment the README recommends. Nothing here is for production use.
package lbtest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// streamModule is where Debian's libnginx-mod-stream installs nginx's
// stream module; nginx-light does not build it in.
const streamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// Options shape a load balancer.
type Options struct {
	// Backends are host:port addresses; nginx picks one per connection.
	Backends []string
	// Balance is the upstream's balancing directive, e.g.
	// "hash $remote_addr consistent;" to keep a client on one gateway;
	// empty means nginx's round robin.
	Balance string
}

// LB is a running nginx stream proxy owned by one test.
type LB struct {
	// Addr is the host:port clients dial.
	Addr string
	// ErrorLog is nginx's error log, which names the backend of each
	// failed connection.
	ErrorLog string
	// Conf is the nginx.conf it runs, for a test's failure message.
	Conf string

	tb   testing.TB
	bin  string
	dir  string
	mu   sync.Mutex
	stop func() // stops the running nginx; nil when stopped
}

// Start fronts backends with a round-robin TCP load balancer and returns
// the address clients dial. t.Cleanup stops it.
func Start(t testing.TB, backends []string) string {
	t.Helper()
	return New(t, Options{Backends: backends}).Addr
}

// New starts nginx with opts and waits until it accepts connections. An
// nginx without the stream module skips the test, or fails it when CI is
// set (.ci/run installs nginx-light and libnginx-mod-stream).
func New(t testing.TB, opts Options) *LB {
	t.Helper()
	if len(opts.Backends) == 0 {
		t.Fatal("lbtest: no backends")
	}
	bin := findNginx(t)
	loadModule := ""
	if !builtinStream(bin) {
		if _, err := os.Stat(streamModule); err != nil {
			missing(t, "nginx's stream module ("+streamModule+", Debian package libnginx-mod-stream)")
		}
		loadModule = "load_module " + streamModule + ";"
	}
	var err error
	for range 3 {
		var lb *LB
		lb, err = prepare(t, bin, loadModule, opts)
		if err == nil {
			if err = lb.launch(); err == nil {
				t.Cleanup(lb.Stop)
				return lb
			}
		}
		// Another process may take the free port before nginx binds it.
		if !strings.Contains(err.Error(), "Address already in use") {
			break
		}
	}
	t.Fatal(err)
	return nil
}

// prepare picks a free port and writes the configuration.
func prepare(t testing.TB, bin, loadModule string, opts Options) (*LB, error) {
	dir := t.TempDir()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("lbtest: finding a free port: %w", err)
	}
	addr := l.Addr().String()
	l.Close()
	var servers strings.Builder
	for _, b := range opts.Backends {
		fmt.Fprintf(&servers, "\t\tserver %s;\n", b)
	}
	// One process (master_process off): the parent-death signal then
	// covers all of nginx, and no worker outlives a crashed test.
	conf := fmt.Sprintf(`daemon off;
master_process off;
%[1]s
pid %[2]s/nginx.pid;
error_log %[2]s/error.log info;
events { worker_connections 256; }
stream {
	upstream backends {
		%[3]s
%[4]s	}
	server {
		listen %[5]s;
		proxy_pass backends;
		proxy_connect_timeout 2s;
		proxy_timeout 10m;
	}
}
`, loadModule, dir, opts.Balance, servers.String(), addr)
	lb := &LB{Addr: addr, ErrorLog: filepath.Join(dir, "error.log"), Conf: filepath.Join(dir, "nginx.conf"), tb: t, bin: bin, dir: dir}
	if err := os.WriteFile(lb.Conf, []byte(conf), 0o600); err != nil {
		return nil, fmt.Errorf("lbtest: %w", err)
	}
	return lb, nil
}

// launch starts nginx and waits until it accepts on Addr.
func (lb *LB) launch() error {
	var out bytes.Buffer
	cmd := exec.Command(lb.bin, "-p", lb.dir, "-e", lb.ErrorLog, "-c", lb.Conf)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("lbtest: starting nginx: %w", err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	// SIGTERM is nginx's fast shutdown: it closes every proxied connection.
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	deadline := time.After(15 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", lb.Addr, time.Second)
		if err == nil {
			c.Close()
			lb.mu.Lock()
			lb.stop = stop
			lb.mu.Unlock()
			return nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(lb.ErrorLog)
			return fmt.Errorf("lbtest: nginx exited: %v\n%s\n%s", waitErr, out.String(), log)
		case <-deadline:
			stop()
			log, _ := os.ReadFile(lb.ErrorLog)
			return fmt.Errorf("lbtest: nginx did not listen on %s within 15s\n%s", lb.Addr, log)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Stop stops nginx, cutting every connection through it: the backends
// become unreachable at Addr, as when a network path fails, while they
// keep running. Stopping a stopped LB does nothing.
func (lb *LB) Stop() {
	lb.mu.Lock()
	stop := lb.stop
	lb.stop = nil
	lb.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// Start starts a stopped LB again on the same Addr.
func (lb *LB) Start() {
	lb.tb.Helper()
	lb.mu.Lock()
	running := lb.stop != nil
	lb.mu.Unlock()
	if running {
		lb.tb.Fatal("lbtest: Start: the load balancer is running")
	}
	if err := lb.launch(); err != nil {
		lb.tb.Fatal(err)
	}
}

// findNginx returns nginx's path, or skips (fails under CI).
func findNginx(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("nginx"); err == nil {
		return p
	}
	if fi, err := os.Stat("/usr/sbin/nginx"); err == nil && !fi.IsDir() {
		return "/usr/sbin/nginx"
	}
	missing(t, "nginx")
	return ""
}

// builtinStream reports whether nginx was built with the stream module in
// (--with-stream, not --with-stream=dynamic).
func builtinStream(bin string) bool {
	out, _ := exec.Command(bin, "-V").CombinedOutput()
	for _, f := range strings.Fields(string(out)) {
		if f == "--with-stream" {
			return true
		}
	}
	return false
}

func missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("%s is not installed, and CI is set: .ci/run must install it", what)
	}
	t.Skipf("%s not installed: skipping (CI installs it)", what)
}

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nefia/nefia/bench/proc"
)

// target is one running server under test: its address and the processes
// whose CPU time is its cost.
type target struct {
	name  string
	addr  string
	procs []*child
	// extra pids counted with the target (nginx's workers).
	extra []int
	// started is when the main process was started.
	started time.Time
}

// pids returns every process whose CPU counts for the target.
func (t *target) pids() []int {
	var p []int
	for _, c := range t.procs {
		p = append(p, c.cmd.Process.Pid)
	}
	return append(p, t.extra...)
}

// pid is the main process.
func (t *target) pid() int { return t.procs[0].cmd.Process.Pid }

// stop ends every process of the target, the last started first.
func (t *target) stop() error {
	var errs []error
	for i := len(t.procs) - 1; i >= 0; i-- {
		if err := t.procs[i].stop(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t.name, err))
		}
	}
	return errors.Join(errs...)
}

// child is one process the runner started.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
	// problems collects the child's warning and error log lines.
	mu       sync.Mutex
	problems []string
}

// startChild starts cmd, scans its output (stdout when addrFromStdout,
// else stderr) until ready returns an address, then keeps draining it,
// keeping only warnings and errors. A child that does not report an address
// within 30s is killed.
func startChild(ctx context.Context, name string, cmd *exec.Cmd, addrFromStdout bool, ready func(line string) (string, bool)) (*child, string, error) {
	c := &child{name: name, cmd: cmd, done: make(chan struct{})}
	var r io.ReadCloser
	var err error
	if addrFromStdout {
		r, err = cmd.StdoutPipe()
		if err == nil {
			cmd.Stderr = &lineSinkT{c: c}
		}
	} else {
		r, err = cmd.StderrPipe()
	}
	if err != nil {
		return nil, "", err
	}
	cmd.SysProcAttr = dieWithParent()
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s: %w", name, err)
	}
	addrc := make(chan string, 1)
	go func() {
		br := bufio.NewReaderSize(r, 64<<10)
		found := ready == nil
		for {
			line, err := br.ReadSlice('\n')
			if len(line) > 0 {
				if !found {
					if a, ok := ready(string(line)); ok {
						found = true
						addrc <- a
					}
				}
				c.note(line)
			}
			if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
				break
			}
		}
		c.err = cmd.Wait()
		close(c.done)
	}()
	if ready == nil {
		return c, "", nil
	}
	select {
	case a := <-addrc:
		return c, a, nil
	case <-c.done:
		return nil, "", fmt.Errorf("%s exited before listening: %v; %s", name, c.err, strings.Join(c.Problems(), " | "))
	case <-time.After(30 * time.Second):
		c.stop()
		return nil, "", fmt.Errorf("%s did not report its address within 30s", name)
	case <-ctx.Done():
		c.stop()
		return nil, "", ctx.Err()
	}
}

// note keeps a log line if it reports a problem.
func (c *child) note(line []byte) {
	l := bytes.ToLower(line)
	if !bytes.Contains(l, []byte("warn")) && !bytes.Contains(l, []byte("error")) && !bytes.Contains(l, []byte("emerg")) && !bytes.Contains(l, []byte("panic")) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.problems) < 50 {
		c.problems = append(c.problems, strings.TrimSpace(string(line)))
	}
}

// Problems returns the warnings and errors the child logged so far.
func (c *child) Problems() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.problems...)
}

// stop sends SIGTERM and waits up to 15s, then kills.
func (c *child) stop() error {
	select {
	case <-c.done:
		return nil
	default:
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
		return nil
	case <-time.After(15 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
		return fmt.Errorf("%s did not stop within 15s of SIGTERM; killed", c.name)
	}
}

// lineSinkT is the io.Writer a child's other stream goes to: problems kept,
// the rest dropped.
type lineSinkT struct {
	c   *child
	buf []byte
}

func (s *lineSinkT) Write(p []byte) (int, error) {
	s.buf = append(s.buf, p...)
	for {
		i := bytes.IndexByte(s.buf, '\n')
		if i < 0 {
			break
		}
		s.c.note(s.buf[:i+1])
		s.buf = s.buf[i+1:]
	}
	if len(s.buf) > 64<<10 {
		s.buf = s.buf[:0]
	}
	return len(p), nil
}

// listeningLine reads "listening ADDR", what the serve-* subcommands print.
func listeningLine(line string) (string, bool) {
	a, ok := strings.CutPrefix(strings.TrimSpace(line), "listening ")
	return a, ok
}

// nefiaListening reads the address from nefia's JSON log line
// {"msg":"gateway listening","addr":...}, as cmd/nefia/serve_test.go does.
func nefiaListening(line string) (string, bool) {
	var rec struct {
		Msg  string `json:"msg"`
		Addr string `json:"addr"`
	}
	if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "gateway listening" {
		return rec.Addr, true
	}
	return "", false
}

// freePort returns a loopback address with a port that was free a moment
// ago, for servers that cannot listen on port 0 and report it (stunnel,
// nginx), and for timing nefia's start-up against a known address.
func freePort() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitTCP polls addr until it accepts a TCP connection.
func waitTCP(ctx context.Context, addr string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("%s not accepting after %v: %w", addr, d, err)
		}
		time.Sleep(500 * time.Microsecond)
	}
}

// cpu samples a target's CPU time; a vanished process fails the sample.
func (t *target) cpu() (time.Duration, error) { return proc.CPUSum(t.pids()) }

// env returns os.Environ with the nefia state dir and config set.
func nefiaEnv(stateDir, configPath string) []string {
	return append(os.Environ(), "NEFIA_STATE_DIR="+stateDir, "NEFIA_CONFIG="+configPath)
}

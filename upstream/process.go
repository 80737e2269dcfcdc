package upstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"sync"
	"time"

	"github.com/mark3labs/mcp-go/client/transport"
)

// stopGrace is how long a stdio upstream has to exit after its stdin
// closes (the MCP stdio shutdown) before its process group is killed.
const stopGrace = 2 * time.Second

// spawn starts a command upstream. nefia runs the process itself, rather
// than through mcp-go's NewStdio, because it must know when the process
// exits (to restart it) and must own its stderr (to log it): the mcp-go
// transport hides both. The client talks over the process's pipes
// (transport.NewIO).
func (u *upstream) spawn(ctx context.Context) (*conn, error) {
	argv := u.cfg.Command
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = commandEnv(os.Environ(), u.cfg.InheritEnv, u.cfg.Env)
	// Never nefia's stdout, which carries JSON-RPC in stdio mode.
	stderr := &logWriter{log: u.log}
	cmd.Stderr = stderr
	// Wait returns this long after the process exits even if a child it
	// left behind still holds the pipes.
	cmd.WaitDelay = stopGrace
	setProcessGroup(cmd)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	u.log.Info("upstream process started", "pid", cmd.Process.Pid)
	exited := make(chan struct{})
	cn := &conn{done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		stderr.flush()
		if err == nil {
			err = errors.New("process exited")
		} else {
			err = fmt.Errorf("process exited: %w", err)
		}
		cn.fail(err)
		close(exited)
	}()
	tr := transport.NewIO(&lineLimit{r: stdout, max: MaxMessageBytes, onLimit: cn.fail}, stdin, nil)
	cn.c = newClient(tr)
	cn.stop = func() {
		_ = cn.c.Close() // closes stdin: the polite way to stop
		select {
		case <-exited:
		case <-time.After(stopGrace):
			killProcessGroup(cmd)
			<-exited
		}
	}
	if err := cn.c.Start(ctx); err != nil {
		cn.stop()
		return nil, fmt.Errorf("start %s: %w", argv[0], err)
	}
	return cn, nil
}

// logWriter logs a process's stderr line by line at info level, clipped,
// so an upstream's diagnostics reach the operator without ever touching
// stdout.
type logWriter struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

// maxLogLine clips a single stderr line in the log.
const maxLogLine = 4096

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.emit(w.buf[:i])
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > maxLogLine {
		w.emit(w.buf)
		w.buf = w.buf[:0]
	}
	return len(p), nil
}

func (w *logWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emit(w.buf)
		w.buf = nil
	}
}

func (w *logWriter) emit(line []byte) {
	line = bytes.TrimRight(line, "\r")
	if len(line) > maxLogLine {
		line = line[:maxLogLine]
	}
	if len(line) > 0 {
		w.log.Info("upstream stderr", "line", string(line))
	}
}

var _ io.Writer = (*logWriter)(nil)

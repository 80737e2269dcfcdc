package tools_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/pki/pkitest"
	"github.com/nefia/nefia/tools"
)

var update = flag.Bool("update", false, "rewrite testdata/toolsnaps from the current tool definitions")

// snapDir is testdata/toolsnaps at the repository root: the tool schemas are
// the protocol surface every client depends on, so they are reviewed as
// files rather than buried in Go code.
const snapDir = "../testdata/toolsnaps"

// TestToolSnapshots compares each tool's full definition (name, title,
// description, input and output schemas, annotations) with its snapshot,
// like github-mcp-server's internal/toolsnaps. Run `go test ./tools -update`
// after an intended change and review the diff. A missing snapshot is
// created locally but is an error when $CI is set, so a snapshot can never
// be skipped by forgetting to commit it.
func TestToolSnapshots(t *testing.T) {
	srv := server.NewMCPServer("t", "0")
	if err := tools.Register(srv, tools.Deps{Store: pkitest.NewStore(t), ConfigPath: filepath.Join(t.TempDir(), "nefia.yaml")}); err != nil {
		t.Fatal(err)
	}
	for _, name := range tools.Names() {
		t.Run(name, func(t *testing.T) {
			st := srv.GetTool(name)
			if st == nil {
				t.Fatalf("%s not registered", name)
			}
			got, err := canonicalJSON(st.Tool)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkSnapshot(filepath.Join(snapDir, name+".json"), got); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func checkSnapshot(path string, got []byte) error {
	if *update {
		return writeSnapshot(path, got)
	}
	want, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if os.Getenv("CI") != "" {
			return fmt.Errorf("snapshot %s is missing; run `go test ./tools -update` and commit it", path)
		}
		return writeSnapshot(path, got)
	}
	if err != nil {
		return err
	}
	if bytes.Equal(want, got) {
		return nil
	}
	return fmt.Errorf("tool definition differs from %s (run `go test ./tools -update` if the change is intended):\n%s", path, lineDiff(string(want), string(got)))
}

func writeSnapshot(path string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// canonicalJSON marshals v with sorted keys and two-space indentation, so
// snapshots are stable and diff well.
func canonicalJSON(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	var generic any
	if err := json.Unmarshal(raw, &generic); err != nil {
		return nil, err
	}
	out, err := json.MarshalIndent(generic, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(out, '\n'), nil
}

// lineDiff shows the changed block between the common leading and trailing
// lines, with a little context.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	pre := 0
	for pre < len(w) && pre < len(g) && w[pre] == g[pre] {
		pre++
	}
	suf := 0
	for suf < len(w)-pre && suf < len(g)-pre && w[len(w)-1-suf] == g[len(g)-1-suf] {
		suf++
	}
	var b strings.Builder
	for _, l := range w[max(0, pre-3):pre] {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	for _, l := range w[pre : len(w)-suf] {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	for _, l := range g[pre : len(g)-suf] {
		fmt.Fprintf(&b, "+ %s\n", l)
	}
	for _, l := range w[len(w)-suf : min(len(w), len(w)-suf+3)] {
		fmt.Fprintf(&b, "  %s\n", l)
	}
	return b.String()
}

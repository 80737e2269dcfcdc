package tools_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/tools"
)

// Register adds the tools to an mcp-go server; the server's own middleware
// attaches the caller's identity and enforces the authorization policy
// (package policy).
func ExampleRegister() {
	state, err := os.MkdirTemp("", "nefia-example")
	if err != nil {
		panic(err)
	}
	defer os.RemoveAll(state)

	srv := server.NewMCPServer("nefia", "0.1.0")
	err = tools.Register(srv, tools.Deps{
		Store:      pki.NewStore(state),
		ConfigPath: filepath.Join(state, "nefia.yaml"),
		// ClientsDir "" = <state>/clients; Sessions nil = stdio mode.
	})
	fmt.Println(err, len(srv.ListTools()))
	// Output: <nil> 6
}

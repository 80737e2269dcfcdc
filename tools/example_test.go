package tools_test

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/mark3labs/mcp-go/server"

	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/tools"
)

// The policy the server applies to every call and to tools/list.
func ExampleAllowed() {
	for _, role := range []pki.Role{pki.RoleOperator, pki.RoleAgent, "unknown"} {
		var allowed []string
		for _, name := range tools.Names() {
			if tools.Allowed(role, name) {
				allowed = append(allowed, name)
			}
		}
		fmt.Printf("%s: %v\n", role, allowed)
	}
	// Output:
	// operator: [nefia.mtls.init nefia.mtls.issue_client nefia.mtls.status nefia.mtls.revoke]
	// agent: [nefia.mtls.status]
	// unknown: []
}

// Register adds the tools to an mcp-go server; the server's own middleware
// attaches the caller's identity and enforces Allowed.
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
	// Output: <nil> 4
}

package config_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/nefia/nefia/config"
)

func ExampleSet() {
	dir, err := os.MkdirTemp("", "nefia-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "nefia.yaml")
	if err := os.WriteFile(path, []byte("# my settings\nversion: 1\nmcp:\n  mtls:\n    enabled: false   # not yet\n"), 0o600); err != nil {
		log.Fatal(err)
	}

	if err := config.Set(path, "mcp.mtls.enabled", "true"); err != nil {
		log.Fatal(err)
	}
	if err := config.Set(path, "mcp.mtls.max_connections", 10); err != nil {
		log.Fatal(err)
	}
	data, _ := os.ReadFile(path)
	fmt.Print(string(data))
	// Output:
	// # my settings
	// version: 1
	// mcp:
	//   mtls:
	//     enabled: true   # not yet
	//     max_connections: 10
}

func ExampleLoad() {
	l, err := config.Load(filepath.Join(os.TempDir(), "does-not-exist", "nefia.yaml"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(l.Exists, l.MCP.MTLS.ListenAddr, l.MCP.MTLS.MaxConnections)
	// Output: false 127.0.0.1:19821 50
}

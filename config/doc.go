// Package config reads and updates nefia.yaml, the user's configuration file.
//
// The file is small and hand-edited, so the package is strict where a silent
// mistake would hurt and gentle where it would not: a missing or empty file
// means "all defaults", but an unknown key (a typo such as listen_adr) or an
// unsupported version is an error naming the key and the file, because
// ignoring it would quietly run the server with settings the user did not
// ask for. Loading applies defaults first and then validates without changing
// anything, so what Validate approves is exactly what runs.
//
// Set edits one key in place through the YAML syntax tree, keeping the user's
// comments and key order, and only writes the result if it still loads and
// validates. Writes are atomic and serialized with a lock file, so the CLI and
// a running server never lose each other's updates.
//
// Choosing which file to use (flag, then environment, then platform default)
// belongs to the CLI; ResolvePath and ResolveStateDir implement that order so
// every command resolves it the same way.
package config

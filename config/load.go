package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
)

// Loaded is a configuration together with where it came from, so that the
// CLI can tell the user "no config file at PATH, using defaults" instead of
// guessing.
type Loaded struct {
	Config
	// Path is the file that was read (or looked for).
	Path string
	// Exists is false when there was no file at Path and Config is Default().
	Exists bool
}

// Load reads the configuration at path. A missing file is not an error: it
// yields Default() with Exists false, so nefia works before the user writes
// any configuration. An empty (or comment-only) file also yields Default().
//
// Keys absent from the file keep their defaults; keys present keep their
// value even if it is zero, so "max_connections: 0" is reported by Validate
// instead of silently becoming 50. Unknown keys, a missing or wrong version,
// malformed YAML and invalid values are all errors naming the file, which
// callers can classify with ErrMalformed, ErrUnknownKey, ErrVersion and
// ErrInvalid. The returned Config has passed Validate.
func Load(path string) (Loaded, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Loaded{Config: Default(), Path: path}, nil
	}
	if err != nil {
		return Loaded{}, fmt.Errorf("config: read %s: %w", path, err)
	}
	return parse(path, data, false)
}

// Reload reads the configuration at path for a process already running on
// one: unlike Load, a missing file, or one with no keys, is an error
// (ErrNoConfig), not Default(). Going back to the defaults would drop the
// running policy and stop every upstream, and a file being rewritten in
// place is empty for a moment (truncated, not yet written), which a reload
// must not take for the operator's choice. The file is read and parsed
// once, and "no keys" is what decoding it found, so what is checked is
// what would have been applied.
func Reload(path string) (Loaded, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Loaded{}, fmt.Errorf("config: %s: %w: the file is missing", path, ErrNoConfig)
	}
	if err != nil {
		return Loaded{}, fmt.Errorf("config: read %s: %w", path, err)
	}
	return parse(path, data, true)
}

// parse decodes and validates data, read from path; with reload, a file
// holding no keys is ErrNoConfig instead of Default().
func parse(path string, data []byte, reload bool) (Loaded, error) {
	c, noKeys, err := decodeKeys(path, data)
	if err != nil {
		return Loaded{}, err
	}
	if reload && noKeys {
		return Loaded{}, fmt.Errorf("config: %s: %w: the file holds no keys", path, ErrNoConfig)
	}
	if err := c.Validate(); err != nil {
		return Loaded{}, fmt.Errorf("config: %s: %w", path, err)
	}
	return Loaded{Config: c, Path: path, Exists: true}, nil
}

// decode parses data on top of Default() without validating the values, so
// that Set can compare a file's contents before and after an edit even when
// the file currently holds an out-of-range value the edit is meant to fix.
func decode(path string, data []byte) (Config, error) {
	c, _, err := decodeKeys(path, data)
	return c, err
}

// decodeKeys is decode, also saying whether the file holds no keys (empty,
// or only comments), which is what gives Default().
func decodeKeys(path string, data []byte) (c Config, noKeys bool, err error) {
	f, err := parser.ParseBytes(data, 0)
	if err != nil {
		return Config{}, false, yamlError(path, err)
	}
	if len(f.Docs) > 1 {
		return Config{}, false, fmt.Errorf("config: %s: %w: more than one document", path, ErrMalformed)
	}
	c = Default()
	if isEmpty(body(f)) {
		if !onlyComments(data) {
			return Config{}, false, fmt.Errorf("config: %s: %w: top level must be a mapping of keys", path, ErrMalformed)
		}
		return c, true, nil
	}
	root, ok := body(f).(*ast.MappingNode)
	if !ok {
		return Config{}, false, fmt.Errorf("config: %s: %w: top level must be a mapping of keys", path, ErrMalformed)
	}
	if err := errors.Join(unknownKeys(path, root, reflect.TypeFor[Config](), "")...); err != nil {
		return Config{}, false, err
	}
	if find(root, "version") == nil {
		return Config{}, false, fmt.Errorf("config: %s: %w", path,
			&keyError{"version", fmt.Sprintf("missing; add \"version: %d\" as the first line", CurrentVersion), ErrVersion})
	}
	if err := yaml.NodeToValue(root, &c, yaml.DisallowUnknownField()); err != nil {
		return Config{}, false, typeError(path, root, err)
	}
	return c, false, nil
}

// typeError names the key whose value could not be decoded; goccy/go-yaml's
// message names Go struct fields ("Config.MCP"), which mean nothing to a
// user editing the file.
func typeError(path string, root *ast.MappingNode, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) || te.Token == nil {
		return yamlError(path, err)
	}
	pos := te.Token.Position
	key := keyAt(root, pos.Line, pos.Column, "")
	return fmt.Errorf("config: %s:%d:%d: %w: %s: cannot use %q as %s", path, pos.Line, pos.Column, ErrMalformed, key, te.Token.Value, te.DstType)
}

// keyAt returns the dotted key whose value starts at line:col, or "".
func keyAt(m *ast.MappingNode, line, col int, prefix string) string {
	for _, mv := range m.Values {
		key := prefix + mv.Key.GetToken().Value
		if tk := mv.Value.GetToken(); tk != nil && tk.Position.Line == line && tk.Position.Column == col {
			return key
		}
		if child, ok := mv.Value.(*ast.MappingNode); ok {
			if k := keyAt(child, line, col, key+"."); k != "" {
				return k
			}
		}
	}
	return ""
}

// body returns the contents of the file's only document, or nil.
func body(f *ast.File) ast.Node {
	if len(f.Docs) != 1 {
		return nil
	}
	return f.Docs[0].Body
}

// isEmpty reports whether a document body holds no keys: an empty file, one
// holding only "---", or one holding only comments.
func isEmpty(n ast.Node) bool {
	if n == nil {
		return true
	}
	_, ok := n.(*ast.CommentGroupNode)
	return ok
}

// onlyComments reports whether src holds nothing but comments, directives
// and document markers, as an empty document should. goccy/go-yaml also
// returns no body for a document holding a lone tag ("!!null", " !00"),
// which is a null, not an empty file: Load took it for one while Set refused
// to edit it (found by FuzzLoad, issue 7). Its lexer drops such a tag, so
// the text is read here.
func onlyComments(src []byte) bool {
	for _, line := range strings.Split(strings.TrimPrefix(string(src), "\ufeff"), "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "---"); ok {
			line = strings.TrimSpace(rest)
		} else if rest, ok := strings.CutPrefix(line, "..."); ok {
			line = strings.TrimSpace(rest)
		}
		if line != "" && line[0] != '#' && line[0] != '%' {
			return false
		}
	}
	return true
}

// unknownKeys walks the mapping alongside the Go type and reports every key
// the type lacks by its full dotted path and line. goccy/go-yaml's own
// DisallowUnknownField only names the last path element ("listen_adr"),
// which is ambiguous once several sections have similar keys.
func unknownKeys(path string, m *ast.MappingNode, t reflect.Type, prefix string) []error {
	var errs []error
	for _, mv := range m.Values {
		key := prefix + mv.Key.GetToken().Value
		f, ok := field(t, mv.Key.GetToken().Value)
		if !ok {
			errs = append(errs, fmt.Errorf("config: %s:%d: %w %q", path, mv.Key.GetToken().Position.Line, ErrUnknownKey, key))
			continue
		}
		errs = append(errs, unknownKeysIn(path, mv.Value, f.Type, key)...)
	}
	return errs
}

// unknownKeysIn checks the value of key: a mapping for a struct, or a
// sequence of mappings for a slice of structs (mcp.policy), whose elements
// are named key[i] so that "mcp.policy[1].match.nmae" says which rule.
func unknownKeysIn(path string, n ast.Node, t reflect.Type, key string) []error {
	switch v := n.(type) {
	case *ast.MappingNode:
		if t.Kind() == reflect.Struct {
			return unknownKeys(path, v, t, key+".")
		}
	case *ast.SequenceNode:
		if t.Kind() == reflect.Slice {
			var errs []error
			for i, el := range v.Values {
				errs = append(errs, unknownKeysIn(path, el, t.Elem(), fmt.Sprintf("%s[%d]", key, i))...)
			}
			return errs
		}
	}
	return nil
}

// find returns the entry for key in m, or nil.
func find(m *ast.MappingNode, key string) *ast.MappingValueNode {
	for _, mv := range m.Values {
		if mv.Key.GetToken().Value == key {
			return mv
		}
	}
	return nil
}

// yamlError turns a goccy/go-yaml error, whose text spans several lines of
// source excerpt, into one line naming the file, line and column.
func yamlError(path string, err error) error {
	var ye yaml.Error
	if errors.As(err, &ye) && ye.GetToken() != nil {
		pos := ye.GetToken().Position
		return fmt.Errorf("config: %s:%d:%d: %w: %s", path, pos.Line, pos.Column, ErrMalformed, ye.GetMessage())
	}
	return fmt.Errorf("config: %s: %w: %v", path, ErrMalformed, err)
}

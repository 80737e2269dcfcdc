package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/nefia/nefia/internal/atomicfile"
)

// Set changes one key (a dotted path such as "mcp.mtls.enabled") in the file
// at path, keeping the user's comments, key order and layout, and creating
// the file (mode 0600, with "version: 1"), its directory (0700) and any
// missing sections as needed. value may have the field's Go type or be a
// string as typed on a command line ("true", "100").
//
// The edit is made on the YAML syntax tree and written only if the result
// loads, validates and differs from the old contents in that key alone, so a
// bad value or a corrupt file leaves the file untouched. The whole
// read-modify-write holds the lock file path+".lock" (left in place, as
// lock files must be), so concurrent Sets from the CLI and a server never
// lose each other's changes.
func Set(path, key string, value any) error {
	index, t, ok := lookup(key)
	if !ok || t.Kind() == reflect.Struct {
		return fmt.Errorf("config: %w %q", ErrUnknownKey, key)
	}
	v, err := convert(key, t, value)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("config: create directory for %s: %w", path, err)
	}
	unlock, err := atomicfile.Lock(path + ".lock")
	if err != nil {
		return fmt.Errorf("config: set %s: %w", key, err)
	}
	defer unlock()

	// New files are 0600 because they may later name key files; an existing
	// file keeps whatever mode its owner chose.
	mode := fs.FileMode(0o600)
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("config: read %s: %w", path, err)
	default:
		fi, err := os.Stat(path)
		if err != nil {
			return fmt.Errorf("config: stat %s: %w", path, err)
		}
		mode = fi.Mode().Perm()
	}
	if len(bytes.TrimSpace(old)) == 0 {
		old = nil
	}

	before, err := decode(path, old)
	if err != nil {
		return err
	}
	out, err := edit(old, strings.Split(key, "."), v.Interface())
	if err == nil && len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n') // a text file ends with a newline, or editors and cat complain
	}
	if err != nil {
		return fmt.Errorf("config: set %s in %s: %w", key, path, err)
	}
	after, err := decode(path, out)
	if err != nil {
		return fmt.Errorf("config: set %s: internal error, edited file would not load, file left unchanged: %w", key, err)
	}
	want := before
	reflect.ValueOf(&want).Elem().FieldByIndex(index).Set(v)
	if !reflect.DeepEqual(want, after) {
		// A guard against the syntax tree being rendered differently from
		// what it means (e.g. an odd multi-line string): never write a file
		// whose meaning changed in more than the one key.
		return fmt.Errorf("config: set %s in %s: edit did not round-trip, file left unchanged", key, path)
	}
	if err := after.Validate(); err != nil {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	if bytes.Equal(out, old) {
		return nil
	}
	if err := atomicfile.WriteFile(path, out, mode); err != nil {
		return fmt.Errorf("config: write %s: %w", path, err)
	}
	return nil
}

// convert turns value into the field's type. Strings are parsed as YAML
// scalars, which is how they would be read from the file.
func convert(key string, t reflect.Type, value any) (reflect.Value, error) {
	rv := reflect.ValueOf(value)
	switch {
	case value == nil:
	case rv.Type() == t:
		return rv, nil
	case rv.Kind() == reflect.String && rv.String() != "":
		p := reflect.New(t)
		if err := yaml.Unmarshal([]byte(rv.String()), p.Interface()); err == nil {
			return p.Elem(), nil
		}
	case rv.CanInt() && reflect.New(t).Elem().CanInt() && !reflect.New(t).Elem().OverflowInt(rv.Int()):
		return rv.Convert(t), nil
	}
	return reflect.Value{}, &keyError{key, fmt.Sprintf("cannot use %#v as %s", value, t), ErrInvalid}
}

// edit sets the key at segs to value in the YAML text src, creating missing
// sections, and returns the new text. It finds the place to change in
// goccy/go-yaml's syntax tree. Where it can, it then edits the original text
// (splice, insertAfter) so every other byte stays as the user wrote it;
// otherwise it re-renders the tree, which keeps comments and key order but
// writes one space before line comments, at most one blank line in a row,
// and LF line endings.
func edit(src []byte, segs []string, value any) ([]byte, error) {
	f, err := parser.ParseBytes(src, parser.ParseComments)
	if err != nil {
		return nil, err
	}
	if isEmpty(body(f)) {
		// Only comments so far: keep them and start the document with the
		// version, without which the file would not load.
		src = append(bytes.TrimRight(src, "\n"), fmt.Sprintf("\nversion: %d\n", CurrentVersion)...)
		return edit(bytes.TrimLeft(src, "\n"), segs, value)
	}
	m, ok := body(f).(*ast.MappingNode)
	if !ok {
		return nil, fmt.Errorf("%w: top level must be a mapping of keys", ErrMalformed)
	}
	for i, seg := range segs {
		mv := find(m, seg)
		if mv == nil {
			text, err := fragment(indent(m), segs[i:], value)
			if err != nil {
				return nil, err
			}
			if out, ok := insertAfter(src, m, text); ok {
				return out, nil
			}
			sub, err := parseFragment(text)
			if err != nil {
				return nil, err
			}
			if m.IsFlowStyle {
				sub.SetIsFlowStyle(true)
			}
			m.Values = append(m.Values, sub.Values...)
			return []byte(f.String()), nil
		}
		if i == len(segs)-1 {
			n, err := yaml.ValueToNode(value)
			if err != nil {
				return nil, err
			}
			if out, ok := splice(src, mv.Value, n.String()); ok {
				return out, nil
			}
			// Keep the line comment ("enabled: false  # why") with the key.
			if err := n.SetComment(lineComment(mv.Value)); err != nil {
				return nil, err
			}
			if err := mv.Replace(n); err != nil {
				return nil, err
			}
			return []byte(f.String()), nil
		}
		switch child := mv.Value.(type) {
		case *ast.MappingNode:
			m = child
		case *ast.NullNode:
			// "mcp:" with nothing under it: hang the new section there.
			text, err := fragment(mv.Key.GetToken().Position.Column+2, segs[i+1:], value)
			if err != nil {
				return nil, err
			}
			sub, err := parseFragment(text)
			if err != nil {
				return nil, err
			}
			if m.IsFlowStyle {
				// A block section inside "{mtls}" would not parse (found by
				// FuzzLoad, issue 7).
				sub.SetIsFlowStyle(true)
			}
			if err := mv.Key.SetComment(child.GetComment()); err != nil {
				return nil, err
			}
			mv.Value = sub
			return []byte(f.String()), nil
		default:
			return nil, fmt.Errorf("%w: %s is a %s, not a section", ErrMalformed, strings.Join(segs[:i+1], "."), child.Type().YAMLName())
		}
	}
	panic("unreachable: the loop returns at the last segment")
}

// lineComment returns the comment on the line of value n, which the parser
// attaches to the innermost node of a tagged or anchored value.
func lineComment(n ast.Node) *ast.CommentGroupNode {
	for n.GetComment() == nil {
		switch w := n.(type) {
		case *ast.TagNode:
			n = w.Value
		case *ast.AnchorNode:
			n = w.Value
		default:
			return nil
		}
	}
	return n.GetComment()
}

// indent is the column of m's keys; 1 for an empty mapping, which can only
// be a flow mapping ("{}"), where indentation does not matter.
func indent(m *ast.MappingNode) int {
	if len(m.Values) == 0 {
		return 1
	}
	return m.Values[0].Key.GetToken().Position.Column
}

package config

import (
	"fmt"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// The functions here edit the user's text directly, guided by token
// positions from the syntax tree, because re-rendering the tree would
// reformat the whole file. Each declines (ok false) anything it cannot do
// exactly, and Set re-parses the result and compares its meaning before
// writing, so a wrong position can never silently change another key.

// oneLine locates v in src if it is a scalar written on one line, returning
// the lines of src, v's line index and the rune span of its text there.
func oneLine(src []byte, v ast.Node) (lines []string, i, start, end int, ok bool) {
	switch v.(type) {
	case *ast.StringNode, *ast.IntegerNode, *ast.FloatNode, *ast.BoolNode:
	default:
		return nil, 0, 0, 0, false
	}
	tk := v.GetToken()
	lines = strings.Split(string(src), "\n")
	if i = tk.Position.Line - 1; i < 0 || i >= len(lines) {
		return nil, 0, 0, 0, false
	}
	// Token columns count runes, not bytes.
	line := []rune(lines[i])
	start, end = tk.Position.Column-1, len(line)
	if c := v.GetComment(); c != nil {
		if c.GetToken().Position.Line != tk.Position.Line {
			return nil, 0, 0, 0, false
		}
		end = c.GetToken().Position.Column - 1
	}
	if start < 0 || start > end || end > len(line) {
		return nil, 0, 0, 0, false
	}
	old := strings.TrimRight(string(line[start:end]), " \t\r")
	switch tk.Type {
	case token.DoubleQuoteType, token.SingleQuoteType:
		// A quoted scalar continued on the next line does not end in its
		// opening quote here.
		if len(old) < 2 || old[0] != old[len(old)-1] || !strings.ContainsRune(`"'`, rune(old[0])) {
			return nil, 0, 0, 0, false
		}
	default:
		// A plain scalar continued on the next line has a longer value.
		if old != tk.Value {
			return nil, 0, 0, 0, false
		}
	}
	return lines, i, start, start + len([]rune(old)), true
}

// splice replaces the one-line scalar v in src with text, keeping the rest
// of its line (aligned comments, CRLF) and of the file as they were.
func splice(src []byte, v ast.Node, text string) ([]byte, bool) {
	lines, i, start, end, ok := oneLine(src, v)
	if !ok || strings.Contains(text, "\n") {
		return nil, false
	}
	line := []rune(lines[i])
	lines[i] = string(line[:start]) + text + string(line[end:])
	return []byte(strings.Join(lines, "\n")), true
}

// insertAfter inserts text (whole lines) after the last entry of the block
// mapping m, when that entry ends in a one-line scalar whose line is
// therefore the mapping's last.
func insertAfter(src []byte, m *ast.MappingNode, text string) ([]byte, bool) {
	var last ast.Node = m
	for {
		mm, ok := last.(*ast.MappingNode)
		if !ok {
			break
		}
		if mm.IsFlowStyle || len(mm.Values) == 0 {
			return nil, false
		}
		last = mm.Values[len(mm.Values)-1].Value
	}
	lines, i, _, _, ok := oneLine(src, last)
	if !ok {
		return nil, false
	}
	nl := "\n"
	if strings.Contains(string(src), "\r\n") {
		nl = "\r\n"
		text = strings.ReplaceAll(text, "\n", nl)
	}
	head := strings.TrimSuffix(strings.Join(lines[:i+1], "\n"), "\r") + nl
	return []byte(head + text + strings.Join(lines[i+1:], "\n")), true
}

// fragment renders the nested mapping segs[0]: segs[1]: ...: value as lines
// whose first key starts at column col.
func fragment(col int, segs []string, value any) (string, error) {
	var v any = value
	for i := len(segs) - 1; i >= 0; i-- {
		v = yaml.MapSlice{{Key: segs[i], Value: v}}
	}
	text, err := yaml.MarshalWithOptions(v, yaml.Indent(2))
	if err != nil {
		return "", err
	}
	pad := strings.Repeat(" ", col-1)
	var b strings.Builder
	for _, line := range strings.SplitAfter(string(text), "\n") {
		if strings.TrimSpace(line) != "" {
			b.WriteString(pad)
		}
		b.WriteString(line)
	}
	return b.String(), nil
}

// parseFragment parses a fragment so that it can be grafted into a syntax
// tree with real token positions, which the printer relies on.
func parseFragment(text string) (*ast.MappingNode, error) {
	f, err := parser.ParseBytes([]byte(text), 0)
	if err != nil {
		return nil, err
	}
	m, ok := f.Docs[0].Body.(*ast.MappingNode)
	if !ok {
		return nil, fmt.Errorf("unexpected %T in generated fragment %q", f.Docs[0].Body, text)
	}
	return m, nil
}

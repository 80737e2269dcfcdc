package tools

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/mark3labs/mcp-go/mcp"
)

// arg is one accepted argument: where its value goes and how to name its
// type in an error message.
type arg struct {
	dst  any // *string, *bool or *[]string
	kind string
}

// noArgs is the spec of a tool without arguments, made once: a literal
// per call escaped to the heap (issue 16 item 3). decodeArgs only reads it.
var noArgs = map[string]arg{}

func stringArg(p *string) arg       { return arg{p, "a string"} }
func boolArg(p *bool) arg           { return arg{p, "a boolean (true or false)"} }
func stringListArg(p *[]string) arg { return arg{p, "an array of strings"} }

// accepted describes a tool's arguments for an error message.
func accepted(spec map[string]arg) string {
	if len(spec) == 0 {
		return "this tool takes no arguments"
	}
	return "this tool accepts " + strings.Join(slices.Sorted(maps.Keys(spec)), ", ")
}

// decodeArgs fills spec from a call's arguments. It does the checking the
// input schema promises instead of trusting the client or the server to
// have done it (mcp-go validates arguments only with
// server.WithInputSchemaValidation): the arguments must be an object, every
// key must be one the tool accepts, spelled exactly (encoding/json alone
// would match "Name" to "name"), and every value must have the declared
// type. A null value counts as absent. The error text is meant for the
// model and names the offending argument.
func decodeArgs(req mcp.CallToolRequest, spec map[string]arg) error {
	raw, err := rawArguments(req)
	if err != nil {
		return err
	}
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) || bytes.Equal(raw, []byte("{}")) {
		return nil // no arguments: nothing to decode (issue 16 item 3: a map and a scan per status call)
	}
	var obj map[string]json.RawMessage // escapes (Unmarshal): not made before it is needed
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("arguments must be a JSON object (%s)", accepted(spec))
	}
	for _, key := range slices.Sorted(maps.Keys(obj)) {
		a, known := spec[key]
		if !known {
			return fmt.Errorf("unknown argument %q (%s)", truncate(key, 64), accepted(spec))
		}
		val := bytes.TrimSpace(obj[key])
		if bytes.Equal(val, []byte("null")) {
			continue
		}
		if err := json.Unmarshal(val, a.dst); err != nil {
			return fmt.Errorf("argument %q must be %s", key, a.kind)
		}
	}
	return nil
}

// rawArguments returns the arguments as JSON: the bytes from the wire when
// the request came through HandleMessage, else the re-encoded value.
func rawArguments(req mcp.CallToolRequest) (json.RawMessage, error) {
	switch v := req.GetRawArguments().(type) {
	case json.RawMessage:
		return bytes.TrimSpace(v), nil
	case nil:
		return nil, nil
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("arguments are not valid JSON")
		}
		return b, nil
	}
}

// truncate shortens caller-supplied text echoed in an error: mcp-go escapes
// it again on the way out, so an unbounded echo multiplies the memory one
// hostile request costs.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

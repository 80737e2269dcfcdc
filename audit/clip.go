package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// MaxRecordBytes is the hard limit on one encoded record (one line of the
// trail, hash included). Every string a peer can choose (a tool name, a
// certificate's CN, an error echoing input) is clipped before the record is
// sealed, and a record that would still be longer has its arguments and
// result replaced by their digest, so one call or one refused handshake
// costs at most this much disk. It is well under maxLine, what Verify and
// Tail read, so a record the writer produced can always be read back
// (issue 10 item 10: a 1 MB tool name made a 6 MB record that broke verify).
const MaxRecordBytes = 64 << 10

// Per-field limits, in bytes of the original string. JSON escaping can grow
// a byte to six (`<` is written \u003c): even then, all fields at their
// limits encode to about 52 KiB, under MaxRecordBytes.
const (
	maxNameBytes   = 256          // tool, agent name, session id, remote address
	maxShortBytes  = 64           // event, outcome, transport, role, serial
	maxTextBytes   = 1024         // error and reason: they may echo caller input
	maxValueBytes  = 1024         // one string inside args or result
	maxKeyBytes    = 128          // one key inside args or result
	maxObjectBytes = maxArgsBytes // args, result: encoded
	// lastResortBytes is what every string is cut to when a record is still
	// over MaxRecordBytes after its arguments and result were digested.
	lastResortBytes = 64
)

// Clip returns s cut to at most max bytes (at a UTF-8 boundary) followed by
// a marker saying how many bytes were dropped, so a reader sees that the
// value was clipped and by how much. The trail clips every record with it;
// it is exported so that logs of peer-chosen strings are clipped alike.
func Clip(s string, max int) string {
	if len(s) <= max {
		return s
	}
	cut := max
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + fmt.Sprintf("…[clipped %d bytes]", len(s)-cut)
}

// clipKeep is Clip for strings whose end matters as much as their start:
// a tool or resource subject, a URI in the arguments, a reason quoting one.
// Padding could push the part that names the target past a head-only cut
// ("file:///srv/shared/" + 1 KiB of "./" + "../etc/shadow"), so it keeps
// the head, the SHA-256 of the whole string (to match it against a copy
// kept elsewhere) and the tail, within max bytes of s plus a marker of
// about 120 bytes.
func clipKeep(s string, max int) string {
	if len(s) <= max {
		return s
	}
	tailBytes := max / 4
	head := max - tailBytes
	for head > 0 && !utf8.RuneStart(s[head]) {
		head--
	}
	tail := len(s) - tailBytes
	for tail < len(s) && !utf8.RuneStart(s[tail]) {
		tail++
	}
	sum := sha256.Sum256([]byte(s))
	return s[:head] + fmt.Sprintf("…[clipped %d of %d bytes, sha256 %s]…", tail-head, len(s), hex.EncodeToString(sum[:])) + s[tail:]
}

// clipRecord bounds every string field of r (recursively inside args and
// result) before it is sealed. It never drops a field, only shortens it.
func clipRecord(r *Record) {
	r.Event = Clip(r.Event, maxShortBytes)
	r.Tool = clipKeep(r.Tool, maxNameBytes)
	r.Upstream = Clip(r.Upstream, maxNameBytes)
	r.SessionID = Clip(r.SessionID, maxNameBytes)
	r.RemoteAddr = Clip(r.RemoteAddr, maxNameBytes)
	r.Transport = Clip(r.Transport, maxShortBytes)
	r.Outcome = Clip(r.Outcome, maxShortBytes)
	r.Reason = clipKeep(r.Reason, maxTextBytes)
	r.Error = clipKeep(r.Error, maxTextBytes)
	r.Decision = clipKeep(r.Decision, maxTextBytes)
	if r.Agent != nil {
		a := *r.Agent // callers may share the Agent; never edit theirs
		a.Name = Clip(a.Name, maxNameBytes)
		a.Serial = Clip(a.Serial, maxShortBytes)
		a.Role = Clip(a.Role, maxShortBytes)
		r.Agent = &a
	}
	r.Args = clipObject(r.Args)
	r.Result = clipObject(r.Result)
}

// clipObject clips every key and string value of m and replaces the whole
// object by its digest when it still encodes to more than maxObjectBytes.
func clipObject(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	if n := approxSize(m); n > 4*maxArgsBytes {
		// Far too large to be worth copying: summarize without encoding.
		return map[string]any{"_omitted": "too large to record", "_bytes": n}
	}
	out := clipValue(m).(map[string]any)
	// appendObject: json.Marshal's bytes without its reflection (issue 16).
	data, err := appendObject(nil, out)
	if err != nil {
		data = nil // what json.Marshal returns with its error
	}
	if err != nil || len(data) > maxObjectBytes {
		return digest(data)
	}
	return out
}

func clipValue(v any) any {
	switch t := v.(type) {
	case string:
		return clipKeep(t, maxValueBytes)
	case map[string]any:
		m := make(map[string]any, len(t))
		for k, v := range t {
			m[Clip(k, maxKeyBytes)] = clipValue(v)
		}
		return m
	case []any:
		s := make([]any, len(t))
		for i, v := range t {
			s[i] = clipValue(v)
		}
		return s
	}
	return v
}

// Digest stands for an object that is not to be recorded whole: its size
// and SHA-256, enough to match it against a copy kept elsewhere.
func Digest(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	data, _ := json.Marshal(m)
	sum := sha256.Sum256(data)
	return map[string]any{"_omitted": "not recorded whole", "_bytes": len(data), "_sha256": hex.EncodeToString(sum[:])}
}

// digest stands in for an object too large to record.
func digest(data []byte) map[string]any {
	sum := sha256.Sum256(data)
	return map[string]any{"_omitted": "too large to record", "_bytes": len(data), "_sha256": hex.EncodeToString(sum[:])}
}

// appendSealedBounded appends r's sealed line, clipped, to dst and enforces
// MaxRecordBytes: a line still too long has its args and result digested,
// then every string cut to lastResortBytes, which always fits.
func (s *sealer) appendSealedBounded(dst []byte, r *Record) ([]byte, error) {
	start := len(dst)
	dst, err := s.appendSealed(dst, r)
	if err != nil || len(dst)-start <= MaxRecordBytes {
		return dst, err
	}
	dst = dst[:start]
	if r.Args != nil {
		data, _ := json.Marshal(r.Args)
		r.Args = digest(data)
	}
	if r.Result != nil {
		data, _ := json.Marshal(r.Result)
		r.Result = digest(data)
	}
	if dst, err = s.appendSealed(dst, r); err != nil || len(dst)-start <= MaxRecordBytes {
		return dst, err
	}
	dst = dst[:start]
	for _, p := range []*string{&r.Event, &r.Tool, &r.SessionID, &r.RemoteAddr, &r.Transport, &r.Outcome, &r.Reason, &r.Error, &r.Decision} {
		*p = Clip(*p, lastResortBytes)
	}
	if r.Agent != nil {
		r.Agent.Name = Clip(r.Agent.Name, lastResortBytes)
		r.Agent.Serial = Clip(r.Agent.Serial, lastResortBytes)
		r.Agent.Role = Clip(r.Agent.Role, lastResortBytes)
	}
	return s.appendSealed(dst, r)
}

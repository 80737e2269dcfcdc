package audit

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

// encodeCases are records whose encoding must not change: every field, odd
// strings (controls, HTML characters, invalid UTF-8, U+2028, astral runes),
// numbers at encoding/json's format boundaries, nested values of every kind
// and types appendValue leaves to json.Marshal.
func encodeCases() []struct {
	name string
	r    Record
} {
	odd := "a\x00b\x01\x1f\x7f\"\\/<>&\b\f\n\r\t\u2028\u2029é😀\xff\xfe\xc3(" + "\ufffd"
	when := time.Date(2026, 11, 27, 18, 15, 3, 123456789, time.UTC)
	return []struct {
		name string
		r    Record
	}{
		{"zero", Record{}},
		{"minimal", Record{ID: "id", Time: when, Event: EventToolCall, PrevHash: Genesis}},
		{"status call", Record{ID: "2b1f0c6e-58d4-4c4e-9a55-0f3c2b7f9e11", Time: when, Event: EventToolCall,
			Tool: "nefia.mtls.status", Agent: &Agent{Name: "bench", Serial: "0a1b2c", Role: "agent"},
			SessionID: "s-1", Outcome: OutcomeOK, Decision: "allow: rule 3", DurationMS: 0.042, PrevHash: Genesis}},
		{"every field", Record{ID: "x", Time: when.Add(-time.Nanosecond * 123456789), Event: "e", Tool: "t",
			Agent: &Agent{Name: "n", Serial: "s", Role: "r", Unverified: true}, SessionID: "sid", RemoteAddr: "127.0.0.1:1",
			Transport: "stream", Args: map[string]any{"a": 1.0}, Result: map[string]any{"b": "c"}, Outcome: "ok",
			Reason: "why", Error: "err", DurationMS: 12345.678, Decision: "d", Upstream: "up", PrevHash: "p", Hash: "h"}},
		{"empty agent", Record{Event: "e", Agent: &Agent{}}},
		{"agent unverified only", Record{Event: "e", Agent: &Agent{Unverified: true}}},
		{"agent role only", Record{Event: "e", Agent: &Agent{Role: "operator"}}},
		{"empty maps omitted", Record{Event: "e", Args: map[string]any{}, Result: map[string]any{}}},
		{"odd strings", Record{ID: odd, Event: odd, Tool: odd, Agent: &Agent{Name: odd, Serial: odd, Role: odd},
			SessionID: odd, RemoteAddr: odd, Transport: odd, Outcome: odd, Reason: odd, Error: odd, Decision: odd,
			Upstream: odd, PrevHash: odd, Args: map[string]any{odd: odd, "": "", "k": []any{odd, []string{odd}}}}},
		{"local time", Record{Event: "e", Time: time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", -5*3600+1800))}},
		{"year 9999", Record{Event: "e", Time: time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)}},
		{"year 0", Record{Event: "e", Time: time.Date(0, 1, 1, 0, 0, 0, 1, time.UTC)}},
		{"year 10000 fails", Record{Event: "e", Time: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"numbers", Record{Event: "e", DurationMS: -0.000001, Args: map[string]any{
			"f0": 0.0, "negzero": math.Copysign(0, -1), "tiny": 1e-7, "edge": 1e-6, "big": 1e20, "huge": 1e21,
			"neg": -1.5e300, "max": math.MaxFloat64, "min": math.SmallestNonzeroFloat64, "third": 1.0 / 3,
			"int": -42, "int64": int64(math.MinInt64), "uint64": uint64(math.MaxUint64), "int32": int32(7),
			"uint8": uint8(255), "f32": float32(0.1), "num": json.Number("12.50"), "bool": true, "false": false, "nil": nil,
		}}},
		{"duration e-notation", Record{Event: "e", DurationMS: 1e-9}},
		{"duration large", Record{Event: "e", DurationMS: 3e21}},
		{"nan fails", Record{Event: "e", DurationMS: math.NaN()}},
		{"inf in args fails", Record{Event: "e", Args: map[string]any{"x": []any{math.Inf(1)}}}},
		{"nested", Record{Event: "e", Result: map[string]any{
			"suppressed": 3, "by_reason": map[string]int{"revoked": 2, "<bad>": 1},
			"list":      []any{map[string]any{"z": 1.0, "a": []any{}, "m": map[string]any{}}, nil, "s"},
			"nil slice": []any(nil), "nil strings": []string(nil), "nil map": map[string]any(nil),
			"strings": []string{"a", "<b>"}, "ss": map[string]string{"k": "v&"}, "raw": json.RawMessage(`{"b": 1, "a":2}`),
			"struct": struct {
				A string `json:"a"`
				B int    `json:"-"`
			}{A: "<x>"}, "time": when, "ptr": &Agent{Name: "p"}, "bytes": []byte("hi\x00"),
		}}},
		{"many keys", Record{Event: "e", Args: func() map[string]any {
			m := map[string]any{}
			for _, k := range strings.Split("q w e r t y u i o p a s d f g h j k l z x c v b n m Q W E 1 2 3 é ü _ -", " ") {
				m[k] = k
			}
			return m
		}()}},
		{"large args", Record{Event: "e", Args: map[string]any{"pad": strings.Repeat("x<\u2028", 20000), "n": 1.0}}},
	}
}

// TestAppendRecordMatchesMarshal: the hand encoder writes exactly the bytes
// json.Marshal writes for every record in the table (and fails where it
// fails), and a sealed line is exactly the line seal (json.Marshal and a
// fresh HMAC, the straightforward encoding) produces, twice in a row with
// the same sealer (its HMAC is reset between records).
func TestAppendRecordMatchesMarshal(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{7}, 32)
	s := newSealer(key)
	for _, tc := range encodeCases() {
		t.Run(tc.name, func(t *testing.T) {
			checkEncoding(t, s, key, tc.r)
		})
	}
}

func checkEncoding(t *testing.T, s *sealer, key []byte, r Record) {
	t.Helper()
	want, werr := json.Marshal(&r)
	got, gerr := appendRecord([]byte("prefix"), &r)
	if (werr != nil) != (gerr != nil) {
		t.Fatalf("errors differ: json.Marshal %v, appendRecord %v", werr, gerr)
	}
	if werr != nil {
		return
	}
	if !bytes.Equal(got[len("prefix"):], want) {
		t.Fatalf("bytes differ:\n got %q\nwant %q", got[len("prefix"):], want)
	}
	r.Hash = ""
	ref := r
	wantLine, err := seal(key, &ref)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		got := r
		line, err := s.appendSealed([]byte("x"), &got)
		if err != nil || !bytes.Equal(line[1:], wantLine) || got.Hash != ref.Hash {
			t.Fatalf("sealed line differs (%v):\n got %q\nwant %q", err, line[1:], wantLine)
		}
	}
}

// TestAppendRecordCoversEveryField: every field of Record, set by
// reflection to a non-zero value, is encoded as json.Marshal encodes it, so
// a field added to Record but not to appendRecord fails here (gateway_id
// was once dropped that way).
func TestAppendRecordCoversEveryField(t *testing.T) {
	t.Parallel()
	var r Record
	v := reflect.ValueOf(&r).Elem()
	for i := range v.NumField() {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(v.Type().Field(i).Name + "-value")
		case reflect.Float64:
			f.SetFloat(1.5)
		case reflect.Map:
			f.Set(reflect.ValueOf(map[string]any{"k": "v"}))
		case reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
		case reflect.Struct:
			if f.Type() != reflect.TypeFor[time.Time]() {
				t.Fatalf("field %s: struct type %s not covered by this test", v.Type().Field(i).Name, f.Type())
			}
			f.Set(reflect.ValueOf(time.Date(2026, 11, 27, 19, 0, 0, 0, time.UTC)))
		default:
			t.Fatalf("field %s: kind %s not covered by this test", v.Type().Field(i).Name, f.Kind())
		}
	}
	r.Agent.Name, r.Agent.Serial, r.Agent.Role, r.Agent.Unverified = "n", "s", "agent", true
	want, err := json.Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := appendRecord(nil, &r)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("bytes differ (%v):\n got %s\nwant %s", err, got, want)
	}
}

// FuzzAppendRecord: for any strings in any field, and numbers of any value,
// the hand encoder and json.Marshal agree byte for byte.
func FuzzAppendRecord(f *testing.F) {
	f.Add("nefia.mtls.status", "a\x00<>&\u2028\xff", 0.042, int64(3), true)
	f.Add("", "", 1e-7, int64(-1), false)
	key := bytes.Repeat([]byte{9}, 32)
	s := newSealer(key)
	f.Fuzz(func(t *testing.T, a, b string, x float64, n int64, flag bool) {
		r := Record{ID: a, Time: time.Unix(n%1e11, n%1e9).UTC(), Event: b, Tool: a, Agent: &Agent{Name: b, Serial: a, Unverified: flag},
			SessionID: b, RemoteAddr: a, Transport: b, Outcome: a, Reason: b, Error: a, Decision: b, Upstream: a, GatewayID: b,
			DurationMS: x, PrevHash: b, Args: map[string]any{a: b, b: x, "n": n, "l": []any{a, x, flag, nil, map[string]any{b: a}}},
			Result: map[string]any{"s": []string{a, b}, a: map[string]int{b: int(n)}}}
		checkEncoding(t, s, key, r)
	})
}

// TestRecordIDsAreRandomUUIDs: ids from the seeded stream keep the format of
// uuid.NewString (version 4, RFC 4122 variant) and do not repeat, across
// streams too.
func TestRecordIDsAreRandomUUIDs(t *testing.T) {
	t.Parallel()
	v4 := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 2 {
		ids := newIDSource()
		for range 5000 {
			id := ids.next()
			if !v4.MatchString(id) || seen[id] {
				t.Fatalf("id %q: not a fresh version 4 UUID", id)
			}
			seen[id] = true
		}
	}
}

// BenchmarkSeal compares sealing one status-call record the straightforward
// way (json.Marshal, fresh HMAC) with the hand encoder and reused HMAC.
func BenchmarkSeal(b *testing.B) {
	key := bytes.Repeat([]byte{7}, 32)
	r := encodeCases()[2].r
	b.Run("marshal", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			rr := r
			if _, err := seal(key, &rr); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("append", func(b *testing.B) {
		s := newSealer(key)
		var buf []byte
		b.ReportAllocs()
		for b.Loop() {
			rr := r
			var err error
			if buf, err = s.appendSealed(buf[:0], &rr); err != nil {
				b.Fatal(err)
			}
		}
	})
}

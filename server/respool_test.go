package server

import (
	"testing"
)

// TestPutRespKeepsTheArrayWrittenFrom: after a direct write, the pool gets
// back the array the answer was encoded in (grown, or new), emptied; an
// array above maxPooledResp is not kept.
func TestPutRespKeepsTheArrayWrittenFrom(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		resp    []byte
		wantCap int // 0: not kept
	}{
		{name: "no answer keeps the buffer", resp: nil, wantCap: 64},
		{name: "grown answer kept", resp: make([]byte, 10, 2048), wantCap: 2048},
		{name: "large answer dropped", resp: make([]byte, 10, maxPooledResp+1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			buf := new([]byte)
			*buf = make([]byte, 0, 64)
			putResp(buf, tc.resp)
			if len(*buf) != 0 || cap(*buf) != tc.wantCap {
				t.Errorf("pooled buffer len %d cap %d, want 0 and %d", len(*buf), cap(*buf), tc.wantCap)
			}
		})
	}
}

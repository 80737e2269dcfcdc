package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// Tail returns the last n records of the trail in dir, oldest first, reading
// back into rotated files when the current one holds fewer. It parses
// records without checking the chain (that is Verify's job).
func Tail(dir string, n int) ([]Record, error) {
	files, err := trailFiles(dir)
	if err != nil {
		return nil, err
	}
	var out []Record
	for i := len(files) - 1; i >= 0 && len(out) < n; i-- {
		recs, err := readAll(files[i])
		if err != nil {
			return nil, err
		}
		if len(recs) > n-len(out) {
			recs = recs[len(recs)-(n-len(out)):]
		}
		out = append(recs, out...)
	}
	return out, nil
}

func readAll(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	var out []Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for line := 1; sc.Scan(); line++ {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("audit: %s:%d: not a record: %v", path, line, err)
		}
		out = append(out, r)
	}
	return out, sc.Err()
}

// Follow calls fn for every record appended to the trail in dir after it is
// called, until ctx ends, following rotations. It polls, so it works across
// processes and file systems.
func Follow(ctx context.Context, dir string, poll time.Duration, fn func(Record)) error {
	path := filepath.Join(dir, TrailFile)
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer func() { f.Close() }()
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	r := bufio.NewReaderSize(f, 64<<10)
	var partial []byte
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		for {
			chunk, err := r.ReadBytes('\n')
			partial = append(partial, chunk...)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("audit: %w", err)
			}
			var rec Record
			if json.Unmarshal(partial, &rec) == nil {
				fn(rec)
			}
			partial = partial[:0]
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// A rotation puts a new file at path: finish the old one (the loop
		// above did), then start the new one from its beginning.
		cur, err := os.Stat(path)
		old, oerr := f.Stat()
		if err == nil && oerr == nil && !os.SameFile(cur, old) {
			nf, err := os.Open(path)
			if err != nil {
				continue
			}
			f.Close()
			f = nf
			r.Reset(f)
			partial = partial[:0]
		}
	}
}

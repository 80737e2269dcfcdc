package audit

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// maxLine bounds one record when reading a trail back; Redact keeps real
// records far below it.
const maxLine = 4 << 20

// VerifyError names the first place the chain does not hold.
type VerifyError struct {
	File   string
	Line   int // 1-based
	Reason string
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Reason)
}

// Unwrap makes errors.Is(err, ErrBroken) hold.
func (e *VerifyError) Unwrap() error { return ErrBroken }

// VerifyDir verifies the whole trail in dir: rotated files oldest first, then
// audit.jsonl, as one chain from Genesis. It returns the number of records.
func VerifyDir(dir string, key []byte) (int, error) {
	files, err := trailFiles(dir)
	if err != nil {
		return 0, err
	}
	return verifyFiles(files, key, Genesis)
}

// VerifyFile verifies one file of a trail. Its first record's prev_hash is
// taken on trust (it links to a rotated file that is not being checked).
func VerifyFile(path string, key []byte) (int, error) {
	return verifyFiles([]string{path}, key, "")
}

func verifyFiles(files []string, key []byte, prev string) (int, error) {
	count := 0
	for _, path := range files {
		hashes, err := scanHashes(path)
		if err != nil {
			return count, err
		}
		f, err := os.Open(path)
		if err != nil {
			return count, fmt.Errorf("audit: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64<<10), maxLine)
		seen := map[string]int{}
		line := 0
		for sc.Scan() {
			line++
			r, err := unseal(key, sc.Bytes())
			if err != nil {
				f.Close()
				return count, &VerifyError{File: path, Line: line, Reason: strings.TrimPrefix(err.Error(), ErrBroken.Error()+": ")}
			}
			if prev != "" && r.PrevHash != prev {
				f.Close()
				return count, &VerifyError{File: path, Line: line, Reason: linkReason(r.PrevHash, line, seen, hashes)}
			}
			seen[r.Hash] = line
			prev = r.Hash
			count++
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return count, &VerifyError{File: path, Line: line + 1, Reason: "unreadable line: " + err.Error()}
		}
	}
	return count, nil
}

// linkReason explains a prev_hash that does not match the line before.
func linkReason(prev string, line int, seen map[string]int, later map[string]int) string {
	if j, ok := seen[prev]; ok {
		return fmt.Sprintf("chains from line %d, not line %d: a line was inserted or duplicated", j, line-1)
	}
	if j, ok := later[prev]; ok && j > line {
		return fmt.Sprintf("chains from line %d, which comes later: lines were reordered", j)
	}
	if prev == Genesis {
		return "starts a new chain in the middle of the trail: a line was inserted or the trail was spliced"
	}
	return "the record it chains from is missing: a line was deleted before it"
}

// scanHashes maps each hash in a file to its line, without checking
// anything, so linkReason can tell a reordering from a deletion.
func scanHashes(path string) (map[string]int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), maxLine)
	for line := 1; sc.Scan(); line++ {
		b := sc.Bytes()
		if i := strings.LastIndex(string(b), hashSuffix); i >= 0 && len(b) >= i+len(hashSuffix)+64 {
			out[string(b[i+len(hashSuffix):i+len(hashSuffix)+64])] = line
		}
	}
	return out, nil
}

// trailFiles lists a trail's files in chain order: rotated files by their
// time-stamped names, then the current file.
func trailFiles(dir string) ([]string, error) {
	rotated, err := filepath.Glob(filepath.Join(dir, "audit-*.jsonl"))
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	sort.Strings(rotated)
	files := rotated
	if _, err := os.Stat(filepath.Join(dir, TrailFile)); err == nil {
		files = append(files, filepath.Join(dir, TrailFile))
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("audit: %w", err)
	}
	return files, nil
}

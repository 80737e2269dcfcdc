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
// audit.jsonl, as one chain from Genesis (or, when audit.max_files removed
// the oldest files, from the hash the checkpoint says the oldest kept record
// chains from), and checks its head against the trail's checkpoint: a
// non-empty trail without one, or one that ends before it, fails. It returns
// the number of records in the files.
func VerifyDir(dir string, key []byte) (int, error) {
	return VerifyWithCheckpoint(dir, key, nil)
}

// VerifyWithCheckpoint is VerifyDir that also checks the trail against
// extra, a checkpoint an operator kept elsewhere: it must be signed with
// this trail's checkpoint key, and the trail must still hold the record it
// names, so nothing older than it was removed or rewritten.
func VerifyWithCheckpoint(dir string, key []byte, extra *Checkpoint) (int, error) {
	// The checkpoint is read before the trail: a writer appending meanwhile
	// only makes the trail longer than it, never shorter.
	pub, err := checkpointPublicKey(dir)
	if err != nil {
		return 0, err
	}
	own, err := readCheckpoint(dir, pub)
	if err != nil {
		return 0, err
	}
	ownPath := filepath.Join(dir, CheckpointFile)
	anchors := []*namedCheckpoint{}
	if own != nil {
		anchors = append(anchors, &namedCheckpoint{own, ownPath})
	}
	if extra != nil {
		if pub == nil {
			return 0, fmt.Errorf("%w: the trail has no checkpoint key to check the given checkpoint with", ErrBroken)
		}
		if err := extra.check(pub); err != nil {
			return 0, fmt.Errorf("%w: the given checkpoint: %v", ErrBroken, err)
		}
		anchors = append(anchors, &namedCheckpoint{extra, "the given checkpoint"})
	}
	files, err := trailFiles(dir)
	if err != nil {
		return 0, err
	}
	var base uint64 // records before the oldest kept file
	n, err := verifyFiles(files, key, "", func(path string, line int, r *Record) error {
		if line != 1 || path != files[0] || r.PrevHash == Genesis {
			return nil
		}
		if own != nil && own.BaseHash != "" && r.PrevHash == own.BaseHash {
			base = own.Removed
			return nil
		}
		return errors.New("the record it chains from is missing: the oldest records were deleted (neither genesis nor the checkpoint's base)")
	}, func(index int, path string, line int, r *Record) error {
		for _, a := range anchors {
			if base+uint64(index) == a.Count && r.Hash != a.Hash {
				return fmt.Errorf("this is record %d, which %s names with another hash: the trail was rewritten", a.Count, a.name)
			}
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	total := base + uint64(n)
	if n > 0 && own == nil {
		return n, fmt.Errorf("%w: %s is missing: the head of a non-empty trail is not anchored, so deleting its newest records would go unnoticed", ErrBroken, ownPath)
	}
	for _, a := range anchors {
		if a.Count > 0 && a.Count == base && own != nil && a.Hash == own.BaseHash {
			continue // it names the last removed record, which the oldest kept one chains from
		}
		if a.Count > 0 && a.Count <= base {
			return n, fmt.Errorf("%w: %s names record %d, older than the oldest kept record (%d): it cannot be checked", ErrBroken, a.name, a.Count, base+1)
		}
		if total < a.Count {
			return n, fmt.Errorf("%w: the trail ends at record %d, before %s (record %d): the newest %d records were removed", ErrBroken, total, a.name, a.Count, a.Count-total)
		}
	}
	return n, nil
}

type namedCheckpoint struct {
	*Checkpoint
	name string
}

// VerifyFile verifies one file of a trail. Its first record's prev_hash is
// taken on trust (it links to a rotated file that is not being checked),
// and the checkpoint is not consulted.
func VerifyFile(path string, key []byte) (int, error) {
	return verifyFiles([]string{path}, key, "", nil, nil)
}

// verifyFiles checks the chain of files. With prev "", the first record's
// link is judged by first (nil: taken on trust); each record is then passed
// to each with its 1-based index in the files. An error of either is
// reported as a VerifyError at that line.
func verifyFiles(files []string, key []byte, prev string,
	first func(path string, line int, r *Record) error,
	each func(index int, path string, line int, r *Record) error) (int, error) {
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
			if prev == "" && first != nil {
				if err := first(path, line, &r); err != nil {
					f.Close()
					return count, &VerifyError{File: path, Line: line, Reason: err.Error()}
				}
			}
			seen[r.Hash] = line
			prev = r.Hash
			count++
			if each != nil {
				if err := each(count, path, line, &r); err != nil {
					f.Close()
					return count, &VerifyError{File: path, Line: line, Reason: err.Error()}
				}
			}
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

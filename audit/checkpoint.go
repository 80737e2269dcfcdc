package audit

import (
	"bufio"
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/nefia/nefia/internal/atomicfile"
)

// File names of the trail's head anchor, next to the trail.
const (
	CheckpointFile    = "checkpoint.json"
	CheckpointKeyFile = "checkpoint.key"
)

// EventCheckpointCreated records that a writer found a non-empty trail
// without a checkpoint and anchored it: the trail predates checkpoints, or
// its checkpoint was removed. Records removed before it cannot be detected
// from the trail alone (an operator's copy of an older checkpoint can).
const EventCheckpointCreated = "audit.checkpoint_created"

// Checkpoint anchors the head of the chain, which the chain itself cannot:
// deleting the newest records leaves a shorter trail that still verifies.
// Writers refresh it, under the trail's lock, after every write that reached
// stable storage; Verify fails when the trail ends before it. It is signed
// with an Ed25519 key used for nothing else, so that a copy an operator
// keeps elsewhere (`nefia audit checkpoint`) proves later that nothing older
// than it was removed.
//
// Count is records since the trail began. Rotated files removed by
// audit.max_files are accounted for by Removed (how many records they held)
// and BaseHash (the hash of the last of them, which the oldest kept record
// chains from), so removing them never makes verification fail.
type Checkpoint struct {
	Version int    `json:"version"`
	Count   uint64 `json:"count"`
	Hash    string `json:"hash"`
	// Offset is the size of audit.jsonl after record Count (0: taken at a
	// rotation, the file starts after it), so that the next writer counts
	// on from there instead of reading every file.
	Offset    int64     `json:"offset"`
	Removed   uint64    `json:"removed,omitempty"`
	BaseHash  string    `json:"base_hash,omitempty"`
	Time      time.Time `json:"time"`
	PublicKey string    `json:"public_key"`
	Signature string    `json:"signature"`
}

func (c *Checkpoint) signed() []byte {
	return fmt.Appendf(nil, "nefia audit checkpoint v1\ncount=%d\nhash=%s\noffset=%d\nremoved=%d\nbase=%s\ntime=%s\n",
		c.Count, c.Hash, c.Offset, c.Removed, c.BaseHash, c.Time.UTC().Format(time.RFC3339Nano))
}

func (c *Checkpoint) sign(key ed25519.PrivateKey) {
	c.Version = 1
	c.PublicKey = hex.EncodeToString(key.Public().(ed25519.PublicKey))
	c.Signature = hex.EncodeToString(ed25519.Sign(key, c.signed()))
}

// check verifies c's signature with pub, the trail's own checkpoint key: a
// checkpoint signed by any other key is refused, whatever key it names.
func (c *Checkpoint) check(pub ed25519.PublicKey) error {
	sig, err := hex.DecodeString(c.Signature)
	if c.Version != 1 || err != nil || c.PublicKey != hex.EncodeToString(pub) || !ed25519.Verify(pub, c.signed(), sig) {
		return errors.New("signature does not verify with this trail's checkpoint key (forged, edited, or from another trail)")
	}
	return nil
}

// ParseCheckpoint decodes a checkpoint (as `nefia audit checkpoint` prints
// it); VerifyWithCheckpoint checks its signature.
func ParseCheckpoint(data []byte) (*Checkpoint, error) {
	var c Checkpoint
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, fmt.Errorf("audit: not a checkpoint: %w", err)
	}
	return &c, nil
}

// ReadCheckpoint returns the signed checkpoint of the trail in dir, checked
// against its key; nil, nil when there is none yet.
func ReadCheckpoint(dir string) (*Checkpoint, error) {
	pub, err := checkpointPublicKey(dir)
	if err != nil {
		return nil, err
	}
	return readCheckpoint(dir, pub)
}

func readCheckpoint(dir string, pub ed25519.PublicKey) (*Checkpoint, error) {
	path := filepath.Join(dir, CheckpointFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: read %s: %w", path, err)
	}
	c, err := ParseCheckpoint(data)
	if err != nil {
		return nil, fmt.Errorf("audit: %s: %w", path, err)
	}
	if pub == nil {
		return nil, fmt.Errorf("%w: %s exists but %s does not", ErrBroken, path, CheckpointKeyFile)
	}
	if err := c.check(pub); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBroken, path, err)
	}
	return c, nil
}

// checkpointPublicKey returns the public half of the checkpoint key, nil
// when there is no key.
func checkpointPublicKey(dir string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(filepath.Join(dir, CheckpointKeyFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: read checkpoint key: %w", err)
	}
	key, err := parseCheckpointKey(data)
	if err != nil {
		return nil, err
	}
	return key.Public().(ed25519.PublicKey), nil
}

func parseCheckpointKey(data []byte) (ed25519.PrivateKey, error) {
	seed, err := hex.DecodeString(string(bytes.TrimSpace(data)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: %s is not a hex Ed25519 seed", ErrUnavailable, CheckpointKeyFile)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// loadOrCreateCheckpointKey reads the checkpoint key, creating it when
// neither it nor a checkpoint exists. A checkpoint without its key is
// refused: making a new key would let anyone replace the checkpoint.
// Callers hold the trail lock.
func loadOrCreateCheckpointKey(dir string) (ed25519.PrivateKey, error) {
	path := filepath.Join(dir, CheckpointKeyFile)
	data, err := os.ReadFile(path)
	if err == nil {
		return parseCheckpointKey(data)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: read %s: %v", ErrUnavailable, path, err)
	}
	if _, err := os.Stat(filepath.Join(dir, CheckpointFile)); err == nil {
		return nil, fmt.Errorf("%w: %s exists but its key %s is missing", ErrUnavailable, CheckpointFile, path)
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("%w: generate checkpoint key: %v", ErrUnavailable, err)
	}
	if err := atomicfile.WriteFile(path, []byte(hex.EncodeToString(seed)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	return ed25519.NewKeyFromSeed(seed), nil
}

// How anchor found the checkpoint.
const (
	anchorFresh   = iota // it names the trail's head already
	anchorMoved          // brought forward to the head: write it
	anchorCreated        // there was none for a non-empty trail: write it, and say so
)

// anchor returns the checkpoint describing the trail as it is now (head
// l.prev, l.f at l.size), under the trail lock. A missing checkpoint is
// rebuilt by counting the trail. One that lags the trail (non-durable
// batches not yet anchored, a writer that died before anchoring) is brought
// forward by counting the lines after its offset, or every line when the
// file changed since. One ahead of the trail means records were removed:
// writing on would hide it, so it is an error.
func (l *Logger) anchor() (ck *Checkpoint, state int, err error) {
	ck, err = readCheckpoint(l.dir, l.ckKey.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if ck != nil && ck.Hash == l.prev {
		return ck, anchorFresh, nil
	}
	if ck != nil {
		if n, ok := l.countSince(ck); ok {
			ck.Count += n
			ck.Hash, ck.Offset = l.prev, l.size
			return ck, anchorMoved, nil
		}
	}
	files, err := trailFiles(l.dir)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	state = anchorMoved
	if ck == nil {
		ck = &Checkpoint{}
		state = anchorCreated
	}
	var at uint64
	if ck.Count > ck.Removed {
		at = ck.Count - ck.Removed
	}
	n, first, hashAt, err := countRecords(files, at)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if first == Genesis && ck.Removed > 0 {
		// Nothing was removed after all (a prune cut short): count anew.
		ck.Removed, ck.BaseHash = 0, ""
		if n, _, hashAt, err = countRecords(files, ck.Count); err != nil {
			return nil, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		at = ck.Count
	}
	switch {
	case first == Genesis:
		ck.BaseHash = ""
	case state == anchorCreated && first != "":
		ck.BaseHash = first // the oldest files are gone already: count from here
	}
	if state == anchorCreated && n == 0 {
		state = anchorMoved
	}
	ckPath := filepath.Join(l.dir, CheckpointFile)
	if ck.Removed+n < ck.Count {
		return nil, 0, fmt.Errorf("%w: the trail holds %d records but its checkpoint %s names %d: %d of the newest were removed (run nefia audit verify)",
			ErrUnavailable, ck.Removed+n, ckPath, ck.Count, ck.Count-ck.Removed-n)
	}
	if at > 0 && hashAt != ck.Hash {
		return nil, 0, fmt.Errorf("%w: record %d is not the one checkpoint %s names: the trail was rewritten (run nefia audit verify)", ErrUnavailable, ck.Count, ckPath)
	}
	ck.Count, ck.Hash, ck.Offset = ck.Removed+n, l.prev, l.size
	return ck, state, nil
}

// countSince counts the records of l.f after the checkpoint's offset, if
// the checkpoint's record is the one that ends there (or, at offset 0, the
// one the file's first record chains from).
func (l *Logger) countSince(ck *Checkpoint) (uint64, bool) {
	if ck.Offset < 0 || ck.Offset > l.size {
		return 0, false
	}
	if ck.Offset == 0 {
		head := make([]byte, min(l.size, MaxRecordBytes+1))
		if _, err := l.f.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
			return 0, false
		}
		i := bytes.IndexByte(head, '\n')
		var rec struct {
			PrevHash string `json:"prev_hash"`
		}
		if i < 0 || json.Unmarshal(head[:i], &rec) != nil || rec.PrevHash != ck.Hash {
			return 0, false
		}
	} else {
		want := hashSuffix + ck.Hash + "\"}\n"
		got := make([]byte, len(want))
		if ck.Offset < int64(len(want)) {
			return 0, false
		}
		if _, err := l.f.ReadAt(got, ck.Offset-int64(len(want))); err != nil || string(got) != want {
			return 0, false
		}
	}
	var n uint64
	buf := make([]byte, 64<<10)
	for off := ck.Offset; off < l.size; {
		k, err := l.f.ReadAt(buf[:min(int64(len(buf)), l.size-off)], off)
		n += uint64(bytes.Count(buf[:k], []byte{'\n'}))
		off += int64(k)
		if err != nil && !(errors.Is(err, io.EOF) && off >= l.size) {
			return 0, false
		}
	}
	return n, true
}

// writeCheckpoint signs and atomically replaces the checkpoint: a fixed
// temp file (writers hold the trail lock, so there is one at a time, and a
// killed writer leaves nothing to pile up), fsynced, renamed over it. The
// directory is not fsynced, unlike internal/atomicfile: a rename lost to a
// power cut leaves the previous checkpoint, which only lags the trail, and
// a lagging checkpoint is valid (the next writer counts on from it). That
// saves one fsync per durable record.
func (l *Logger) writeCheckpoint(ck *Checkpoint) error {
	ck.Time = l.opts.Now().UTC()
	ck.sign(l.ckKey)
	data, err := json.MarshalIndent(ck, "", "  ")
	if err != nil {
		return fmt.Errorf("%w: encode checkpoint: %v", ErrUnavailable, err)
	}
	path := filepath.Join(l.dir, CheckpointFile)
	tmp := filepath.Join(l.dir, "."+CheckpointFile+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("%w: write checkpoint: %v", ErrUnavailable, err)
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("%w: write checkpoint %s: %v", ErrUnavailable, path, err)
	}
	return nil
}

// countRecords counts the lines of files and returns the prev_hash of the
// first record (Genesis for a trail that starts in them, "" when empty) and
// the hash of record number at (1-based; "" when there is none).
func countRecords(files []string, at uint64) (n uint64, first, hashAt string, err error) {
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return 0, "", "", fmt.Errorf("audit: %w", err)
		}
		r := bufio.NewReaderSize(f, 64<<10)
		for {
			line, err := r.ReadSlice('\n')
			head := line
			if errors.Is(err, bufio.ErrBufferFull) {
				// A long line: its start has prev_hash, its end the hash.
				head = bytes.Clone(line)
				for errors.Is(err, bufio.ErrBufferFull) {
					line, err = r.ReadSlice('\n')
				}
			}
			if err != nil {
				f.Close()
				if errors.Is(err, io.EOF) {
					break
				}
				return 0, "", "", fmt.Errorf("audit: read %s: %w", path, err)
			}
			n++
			if n == 1 {
				first = fieldPrefix(head, `"prev_hash":"`)
			}
			if n == at {
				hashAt = fieldPrefix(line, `"hash":"`)
			}
		}
	}
	return n, first, hashAt, nil
}

// fieldPrefix returns the 64-character hash that follows key in line (the
// last occurrence: the hash field is the last one), or "".
func fieldPrefix(line []byte, key string) string {
	i := bytes.LastIndex(line, []byte(key))
	if i < 0 || len(line) < i+len(key)+64 {
		return ""
	}
	return string(line[i+len(key) : i+len(key)+64])
}

// prune removes the oldest rotated files beyond Options.MaxFiles, after
// recording in the checkpoint how many records they held and the hash the
// oldest kept record chains from. Runs under both locks, after a rotation.
func (l *Logger) prune() error {
	if l.opts.MaxFiles <= 0 {
		return nil
	}
	files, err := trailFiles(l.dir)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	rotated := files[:0:0]
	for _, f := range files {
		if f != l.path {
			rotated = append(rotated, f)
		}
	}
	if len(rotated) <= l.opts.MaxFiles {
		return nil
	}
	victims := rotated[:len(rotated)-l.opts.MaxFiles]
	ck, _, err := l.anchor()
	if err != nil {
		return err
	}
	n, _, _, err := countRecords(victims, 0)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	f, err := os.Open(victims[len(victims)-1])
	if err != nil {
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	base, _, _, err := lastHash(f, l.key)
	f.Close()
	if err != nil {
		return err
	}
	ck.Removed += n
	ck.BaseHash = base
	if err := l.writeCheckpoint(ck); err != nil {
		return err
	}
	for _, v := range victims {
		if err := os.Remove(v); err != nil {
			return fmt.Errorf("%w: remove %s: %v", ErrUnavailable, v, err)
		}
		l.log.Info("audit: removed rotated file (audit.max_files)", "file", v)
	}
	return atomicfile.SyncDir(l.dir)
}

package audit

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"

	"github.com/nefia/nefia/internal/atomicfile"
)

// File names in the audit directory.
const (
	TrailFile = "audit.jsonl"
	KeyFile   = "audit.key"
	lockFile  = ".audit.lock"
)

// Defaults for Options.
const (
	DefaultMaxSize      = 100 << 20
	DefaultSyncInterval = 100 * time.Millisecond
)

// Options configure a Logger. Zero values take the defaults.
type Options struct {
	// MaxSize is the size at which audit.jsonl is rotated to
	// audit-<time>.jsonl; the chain continues into the new file.
	MaxSize int64
	// SyncInterval bounds how long a non-durable record may sit unsynced.
	SyncInterval time.Duration
	// MaxFiles is how many rotated files are kept (audit.max_files); the
	// oldest beyond it are removed after a rotation, their records counted
	// in the checkpoint. 0 keeps all.
	MaxFiles int
	// GatewayID is written into every record (Record.GatewayID), so the
	// trails of gateways sharing a store say which one acted; empty writes
	// none.
	GatewayID string
	// Now is the clock records are stamped with.
	Now    func() time.Time
	Logger *slog.Logger
}

// Logger appends records to the trail. It is safe for concurrent use, and
// several processes (a running gateway and the CLI) may append to the same
// trail: every append holds an exclusive file lock and continues the chain
// from whatever the file ends with.
type Logger struct {
	dir, path string
	key       []byte
	ckKey     ed25519.PrivateKey // signs the checkpoint
	opts      Options
	log       *slog.Logger

	mu     sync.Mutex // guards everything below and serializes appends in-process
	lockFD *os.File   // flock(2) target shared with other processes
	f      *os.File
	fi     os.FileInfo // identity of f, to notice a removed or replaced file
	size   int64       // size of f after our last write or resync
	prev   string      // hash of the last record in the trail
	// cut, when not negative, is where f must be cut back to before the
	// next write: a write failed part-way and cutting its bytes off failed
	// too. Until it succeeds, appends are refused; once it does (space came
	// back), the chain continues from the last whole record.
	cut    int64
	closed bool
	// adopting is set while Open records that it anchored a trail without
	// a checkpoint; at any other time a missing checkpoint is refused
	// (checkpointLost).
	adopting bool
	// durFI and durSize say how much of which file is known to be on
	// stable storage; unanchored, that records were written since the last
	// checkpoint (non-durable batches are anchored by the next sync).
	durFI      os.FileInfo
	durSize    int64
	unanchored bool
	// pending are stamped, unsealed records waiting for the next group
	// write; they join the chain (get prev_hash and hash) when written.
	pending []Record
	// sealer, ids and wbuf make a record cheap to write (issue 16 item
	// 1): one HMAC reused, ids from a stream seeded once, one write buffer.
	sealer *sealer
	ids    *idSource
	wbuf   []byte

	written  atomic.Uint64 // records appended by this Logger
	failures atomic.Uint64 // appends and batch writes that failed (Failures)
	synced   atomic.Uint64 // records known to be on stable storage
	syncMu   sync.Mutex    // one fsync at a time; others wait and share it

	stop chan struct{}
	done chan struct{}
}

// Open opens (creating if needed) the trail in dir, generating the HMAC key
// on first use. If the trail ends in a torn line (a crash mid-write), the
// torn bytes are cut off and an audit.recovered record says so; a trail
// whose last complete line is not a record is an error naming the file,
// because continuing it would hide the break.
func Open(dir string, opts Options) (*Logger, error) {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = DefaultSyncInterval
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("%w: create %s: %v", ErrUnavailable, dir, err)
	}
	lockFD, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	l := &Logger{dir: dir, path: filepath.Join(dir, TrailFile), opts: opts, log: opts.Logger, lockFD: lockFD,
		cut: -1, stop: make(chan struct{}), done: make(chan struct{})}
	var created *Checkpoint
	if err := l.withFileLock(func() error {
		var err error
		if l.key, err = loadOrCreateKey(filepath.Join(dir, KeyFile)); err != nil {
			return err
		}
		l.sealer, l.ids = newSealer(l.key), newIDSource()
		if l.ckKey, err = loadOrCreateCheckpointKey(dir); err != nil {
			return err
		}
		if err := l.reopen(); err != nil {
			return err
		}
		ck, state, err := l.anchor()
		if err != nil {
			return err
		}
		switch {
		case state == anchorCreated:
			created = ck
		case state == anchorMoved && ck.Count == 0:
			// A new trail gets its checkpoint at once: from now on a
			// missing one means it was removed.
			return l.writeCheckpoint(ck)
		}
		return nil
	}); err != nil {
		lockFD.Close()
		if l.f != nil {
			l.f.Close()
		}
		return nil, err
	}
	go l.syncLoop()
	if created != nil {
		// The trail predates checkpoints, or its checkpoint was removed:
		// say so on the trail; writing this record anchors it.
		r := Record{Event: EventCheckpointCreated, Outcome: OutcomeOK,
			Reason: fmt.Sprintf("the trail had no checkpoint; anchored its %d records as found", created.Count)}
		l.mu.Lock()
		l.adopting = true // this record's anchor creates the checkpoint
		l.mu.Unlock()
		err := l.Append(r, true)
		l.mu.Lock()
		l.adopting = false
		l.mu.Unlock()
		if err != nil {
			l.Close()
			return nil, err
		}
	}
	return l, nil
}

// Path returns the current trail file.
func (l *Logger) Path() string { return l.path }

// Dir returns the audit directory.
func (l *Logger) Dir() string { return l.dir }

// maxBatch bounds how many non-durable records wait in memory for the next
// group write.
const maxBatch = 256

// maxKeptBuffer is the largest write buffer kept for the next batch; a
// larger one (a batch of big records) is left to the garbage collector.
const maxKeptBuffer = 1 << 20

// Append adds r to the chain. With durable set, it is written and on stable
// storage before Append returns, and an error means it is not in the trail
// (the caller must not act); records waiting in the batch are written with
// it, in order. Without durable, r joins the batch that is written (one lock,
// one write) and fsynced within SyncInterval, by Flush, or by Close: a crash
// of the process loses at most that batch, never a durable record. A failed
// batch write is logged. Errors wrap ErrUnavailable.
func (l *Logger) Append(r Record, durable bool) error {
	l.mu.Lock()
	if err := l.usable(); err != nil {
		l.mu.Unlock()
		l.failures.Add(1)
		l.log.Error("audit append failed", "event", r.Event, "error", err)
		return err
	}
	r.ID = l.ids.next()
	r.Time = l.opts.Now().UTC()
	if r.GatewayID == "" {
		r.GatewayID = l.opts.GatewayID
	}
	clipRecord(&r)
	l.pending = append(l.pending, r)
	if !durable && len(l.pending) < maxBatch {
		l.mu.Unlock()
		return nil
	}
	_, err := l.flushLocked(durable)
	l.mu.Unlock()
	if err != nil {
		l.failures.Add(1)
		l.log.Error("audit append failed", "event", r.Event, "error", err)
		return err
	}
	return nil
}

// Failures counts the appends refused and the batch writes that failed
// since the Logger was opened, for the metrics: a record that failed is a
// hole in the trail an operator should hear of before reading it.
func (l *Logger) Failures() uint64 { return l.failures.Load() }

// Flush writes the waiting batch now, so that readers of the file, in this
// process or another, see every record appended so far, and refreshes the
// checkpoint to name them (which fsyncs them first), so that a verify that
// follows sees a trail that ends exactly at its checkpoint.
func (l *Logger) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.usable(); err != nil {
		return err
	}
	if len(l.pending) > 0 {
		if _, err := l.flushLocked(false); err != nil {
			return err
		}
	}
	return l.anchorNow()
}

// writePending writes the waiting batch without fsync or checkpoint (the
// sync loop does both next, the fsync outside l.mu).
func (l *Logger) writePending() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.pending) == 0 {
		return nil
	}
	_, err := l.flushLocked(false)
	return err
}

func (l *Logger) usable() error {
	if l.closed {
		return fmt.Errorf("%w: logger closed", ErrUnavailable)
	}
	return nil
}

// flushLocked seals the waiting records onto the chain and writes them in one
// write(2) under the cross-process lock; it returns the sequence number of the
// last one. With durable, they are fsynced and the checkpoint names them
// before it returns; otherwise the next sync (within SyncInterval) does
// both. On failure the batch is dropped (and the error returned): its
// records were never part of the chain.
func (l *Logger) flushLocked(durable bool) (uint64, error) {
	batch := l.pending
	l.pending = l.pending[:0:0]
	if err := l.usable(); err != nil {
		return 0, err
	}
	defer func() {
		// The batch's slice is reused for the next one: nothing else holds
		// it once it is written (or dropped), and l.mu is held throughout.
		if cap(batch) <= 2*maxBatch && len(l.pending) == 0 {
			clear(batch)
			l.pending = batch[:0]
		}
	}()
	var seq uint64
	err := l.withFileLock(func() error {
		if err := l.cutTorn(); err != nil {
			return err
		}
		if err := l.follow(); err != nil {
			return err
		}
		if l.size >= l.opts.MaxSize {
			if err := l.rotate(); err != nil {
				return err
			}
		}
		var ck *Checkpoint
		if durable {
			var err error
			var state int
			if ck, state, err = l.anchor(); err != nil {
				return err
			}
			if state == anchorCreated && !l.adopting {
				return l.checkpointLost()
			}
		}
		buf := l.wbuf[:0]
		prev := l.prev
		for i := range batch {
			batch[i].PrevHash = prev
			var err error
			if buf, err = l.sealer.appendSealedBounded(buf, &batch[i]); err != nil {
				return err
			}
			buf = append(buf, '\n')
			prev = batch[i].Hash
		}
		if cap(buf) <= maxKeptBuffer {
			l.wbuf = buf[:0]
		}
		start := l.size
		n, err := l.f.Write(buf)
		l.size += int64(n)
		if err != nil {
			if n > 0 {
				// A full disk (ENOSPC) writes part of the batch. None of it
				// joins the chain: cut it off now (that frees space, so it
				// works on a full disk), or before the next write.
				l.cut = start
				if cerr := l.cutTorn(); cerr != nil {
					l.log.Error("audit: cannot cut a partial write yet; appends are refused until it is cut", "file", l.path, "error", cerr)
				}
			}
			return fmt.Errorf("%w: write %s: %v", ErrUnavailable, l.path, err)
		}
		l.prev = prev
		seq = l.written.Add(uint64(len(batch)))
		l.unanchored = true
		if !durable {
			return nil
		}
		// The checkpoint may only name records on stable storage: a power
		// loss must never leave a checkpoint ahead of the trail.
		if err := l.syncHead(); err != nil {
			return err
		}
		ck.Count += uint64(len(batch))
		ck.Hash, ck.Offset = prev, l.size
		if err := l.writeCheckpoint(ck); err != nil {
			return err
		}
		l.unanchored = false
		return nil
	})
	return seq, err
}

// checkpointLost refuses to go on when the checkpoint vanished while this
// Logger had the trail open: rebuilding it silently would anchor whatever
// the trail holds now, so records cut from its end together with the
// checkpoint would go unnoticed (found by the review of issue 10). Nothing
// nefia does removes it; state changes stay refused until an operator has
// run 'nefia audit verify' and restarted, when Open anchors the trail as
// found and records that it did (audit.checkpoint_created).
func (l *Logger) checkpointLost() error {
	return fmt.Errorf("%w: %s vanished while the trail was open; records may have been removed: check with 'nefia audit verify', then restart",
		ErrUnavailable, filepath.Join(l.dir, CheckpointFile))
}

// syncHead makes the trail file durable up to its current size, unless it
// is already. Runs under both locks.
func (l *Logger) syncHead() error {
	if l.durFI != nil && os.SameFile(l.fi, l.durFI) && l.size <= l.durSize {
		return nil
	}
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("%w: fsync %s: %v", ErrUnavailable, l.path, err)
	}
	l.durFI, l.durSize = l.fi, l.size
	if w := l.written.Load(); w > l.synced.Load() {
		l.synced.Store(w)
	}
	return nil
}

// anchorNow brings the checkpoint to the trail's head (its records made
// durable first), after non-durable batches. Runs under l.mu.
func (l *Logger) anchorNow() error {
	if !l.unanchored {
		return nil
	}
	return l.withFileLock(func() error {
		if err := l.follow(); err != nil {
			return err
		}
		if err := l.syncHead(); err != nil {
			return err
		}
		ck, state, err := l.anchor()
		if err == nil && state == anchorCreated && !l.adopting {
			err = l.checkpointLost()
		}
		if err == nil && state != anchorFresh {
			err = l.writeCheckpoint(ck)
		}
		if err == nil {
			l.unanchored = false
		}
		return err
	})
}

// cutTorn cuts the bytes of a failed write off the trail, so the chain
// continues from the last whole record ("no audit, no action" holds only
// while records cannot be written: issue 10 item 12). If another process
// has changed the file since (it appended, or it rotated it), the cut is
// left to the torn-tail recovery of reopen, which records what it cut.
func (l *Logger) cutTorn() error {
	if l.cut < 0 {
		return nil
	}
	fi, err := os.Stat(l.path)
	if err != nil || !os.SameFile(fi, l.fi) || fi.Size() != l.size {
		l.log.Warn("audit: trail changed after a failed write; leaving the torn bytes to recovery", "file", l.path)
		l.cut = -1
		return nil
	}
	if err := l.f.Truncate(l.cut); err != nil {
		return fmt.Errorf("%w: cut a partial write off %s: %v", ErrUnavailable, l.path, err)
	}
	l.log.Warn("audit: cut a partial write off the trail", "file", l.path, "bytes", l.size-l.cut)
	l.size, l.cut = l.cut, -1
	return nil
}

// follow makes sure l.f is the file at l.path and l.prev its last hash,
// catching up with records other processes appended, a rotation they made,
// and refusing a trail that was removed or replaced by something else.
func (l *Logger) follow() error {
	fi, err := os.Stat(l.path)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrUnavailable, l.path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file", ErrUnavailable, l.path)
	}
	if os.SameFile(fi, l.fi) && fi.Size() == l.size {
		return nil
	}
	if !os.SameFile(fi, l.fi) && fi.Size() == 0 {
		// A rotation always leaves a record in the new file, so an empty
		// replacement means someone removed the trail and put a blank one
		// in its place: continuing it would hide the cut.
		return fmt.Errorf("%w: %s was replaced by an empty file", ErrUnavailable, l.path)
	}
	return l.reopen()
}

// reopen opens l.path and reads its last record's hash. When l.path is
// still the file already open, the descriptor is kept (only the tail is
// re-read), so an fsync in flight on it stays valid.
func (l *Logger) reopen() error {
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("%w: open %s: %v", ErrUnavailable, l.path, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("%w: stat %s: %v", ErrUnavailable, l.path, err)
	}
	if l.f != nil && os.SameFile(fi, l.fi) {
		f.Close()
		f = l.f
	}
	prev, size, torn, err := lastHash(f, l.key)
	if err == nil && torn > 0 {
		if err = l.recover(f, size, torn); err == nil {
			prev, _, _, err = lastHash(f, l.key)
		}
	}
	if err == nil {
		fi, err = f.Stat()
	}
	if err != nil {
		if f != l.f {
			f.Close()
		}
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	if prev == "" {
		prev = l.prev // a new file: the chain continues from the previous file (or Genesis)
		if prev == "" {
			prev = l.prevFromRotated()
		}
	}
	if l.f != nil && l.f != f {
		l.f.Close()
	}
	l.f, l.fi, l.size, l.prev = f, fi, fi.Size(), prev
	return nil
}

// recover cuts a torn tail (bytes after the last newline) and records that
// it did, with the cut bytes' length, so the trail says what was lost.
//
// The record is written over the torn bytes first and the file cut after
// it, never the other way round: a crash between cutting and writing would
// leave a trail that silently lost bytes, with no audit.recovered record.
// Crashing between these steps leaves the record followed at worst by the
// rest of the torn bytes, which the next Open cuts in turn (found while
// writing TestCrashConsistency, issue 7).
func (l *Logger) recover(f *os.File, good int64, torn int64) error {
	l.log.Warn("audit trail ended in a torn record; cutting it off", "file", l.path, "bytes", torn)
	prev, _, _, err := lastHash(f, l.key) // the last complete line's, before the torn bytes
	if err != nil {
		return err
	}
	if prev == "" {
		prev = l.prevFromRotated()
	}
	r := Record{ID: uuid.NewString(), Time: l.opts.Now().UTC(), Event: EventRecovered, Outcome: OutcomeOK,
		Reason: fmt.Sprintf("cut %d bytes of a torn last record", torn), PrevHash: prev}
	line, err := seal(l.key, &r)
	if err != nil {
		return err
	}
	line = append(line, '\n')
	// f appends (O_APPEND), which WriteAt refuses: write through a second
	// descriptor of the same file.
	w, err := os.OpenFile(f.Name(), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("%w: open %s: %v", ErrUnavailable, l.path, err)
	}
	defer w.Close()
	if fi, wi, err := statBoth(f, w); err != nil || !os.SameFile(fi, wi) {
		return fmt.Errorf("%w: %s was replaced while recovering it", ErrUnavailable, l.path)
	}
	if _, err := w.WriteAt(line, good); err != nil {
		return fmt.Errorf("%w: write %s: %v", ErrUnavailable, l.path, err)
	}
	if err := w.Truncate(good + int64(len(line))); err != nil {
		return fmt.Errorf("%w: cut torn tail of %s: %v", ErrUnavailable, l.path, err)
	}
	if err := w.Sync(); err != nil {
		return fmt.Errorf("%w: fsync %s: %v", ErrUnavailable, l.path, err)
	}
	return nil
}

func statBoth(a, b *os.File) (os.FileInfo, os.FileInfo, error) {
	ai, err := a.Stat()
	if err != nil {
		return nil, nil, err
	}
	bi, err := b.Stat()
	return ai, bi, err
}

// prevFromRotated returns the last hash of the newest rotated file, or
// Genesis for a trail that starts here.
func (l *Logger) prevFromRotated() string {
	files, err := trailFiles(l.dir)
	if err != nil {
		return Genesis
	}
	for i := len(files) - 1; i >= 0; i-- {
		if files[i] == l.path {
			continue
		}
		f, err := os.Open(files[i])
		if err != nil {
			continue
		}
		prev, _, _, err := lastHash(f, l.key)
		f.Close()
		if err == nil && prev != "" {
			return prev
		}
	}
	return Genesis
}

// rotate moves the full trail aside and starts a new file; the next record
// chains from the old file's last one. Runs under both locks.
func (l *Logger) rotate() error {
	if err := l.f.Sync(); err != nil {
		return fmt.Errorf("%w: fsync %s: %v", ErrUnavailable, l.path, err)
	}
	l.synced.Store(l.written.Load())
	l.durFI, l.durSize = l.fi, l.size
	// Anchor the old file's last record while it is still the one open, so
	// that it is counted from the checkpoint's offset, not by reading every
	// file after the rename.
	if ck, state, err := l.anchor(); err != nil {
		return err
	} else if state != anchorFresh {
		if err := l.writeCheckpoint(ck); err != nil {
			return err
		}
	}
	name := filepath.Join(l.dir, "audit-"+l.opts.Now().UTC().Format("20060102T150405.000000000Z")+".jsonl")
	if err := os.Rename(l.path, name); err != nil {
		return fmt.Errorf("%w: rotate %s: %v", ErrUnavailable, l.path, err)
	}
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("%w: create %s: %v", ErrUnavailable, l.path, err)
	}
	if err := atomicfile.SyncDir(l.dir); err != nil {
		f.Close()
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	l.f.Close()
	l.f, l.fi, l.size = f, fi, 0
	l.log.Info("audit trail rotated", "old", name)
	if err := l.prune(); err != nil {
		// Housekeeping: the chain and the checkpoint are intact either way.
		l.log.Error("audit: removing old rotated files failed", "error", err)
	}
	// Anchor at the start of the new file, so the next writer counts on
	// from there.
	ck, _, err := l.anchor()
	if err != nil {
		return err
	}
	ck.Offset = 0
	return l.writeCheckpoint(ck)
}

// syncTo returns once record seq is on stable storage. Concurrent callers
// share one fsync (group commit).
func (l *Logger) syncTo(seq uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	if l.synced.Load() >= seq {
		return nil
	}
	l.mu.Lock()
	f, upto, fi, size := l.f, l.written.Load(), l.fi, l.size
	l.mu.Unlock()
	if f == nil {
		return fmt.Errorf("%w: logger closed", ErrUnavailable)
	}
	if err := f.Sync(); err != nil {
		l.mu.Lock()
		replaced := l.f != f
		l.mu.Unlock()
		// A rotation (ours or another process's) fsyncs the old file before
		// moving it aside, so records written to it are already durable.
		if replaced && errors.Is(err, os.ErrClosed) {
			return nil
		}
		return fmt.Errorf("%w: fsync %s: %v", ErrUnavailable, l.path, err)
	}
	if upto > l.synced.Load() {
		l.synced.Store(upto)
	}
	// What was fsynced need not be again before a checkpoint names it.
	l.mu.Lock()
	if os.SameFile(l.fi, fi) && (l.durFI == nil || !os.SameFile(l.durFI, fi) || size > l.durSize) {
		l.durFI, l.durSize = fi, size
	}
	l.mu.Unlock()
	return nil
}

func (l *Logger) syncLoop() {
	defer close(l.done)
	t := time.NewTicker(l.opts.SyncInterval)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			if err := l.writePending(); err != nil {
				l.failures.Add(1)
				l.log.Error("audit batch write failed", "error", err)
			}
			if w := l.written.Load(); w > l.synced.Load() {
				if err := l.syncTo(w); err != nil {
					l.log.Error("audit fsync failed", "error", err)
				}
			}
			l.mu.Lock()
			if !l.closed {
				if err := l.anchorNow(); err != nil {
					l.log.Error("audit checkpoint not refreshed", "error", err)
				}
			}
			l.mu.Unlock()
		}
	}
}

// Close flushes every record to stable storage and closes the trail.
func (l *Logger) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	var err error
	if len(l.pending) > 0 {
		_, err = l.flushLocked(false)
	}
	l.closed = true
	l.mu.Unlock()
	close(l.stop)
	<-l.done
	if serr := l.syncTo(l.written.Load()); err == nil {
		err = serr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if aerr := l.anchorNow(); err == nil {
		err = aerr
	}
	if cerr := l.f.Close(); err == nil && cerr != nil {
		err = cerr
	}
	l.f = nil
	l.lockFD.Close()
	return err
}

// withFileLock runs fn holding the trail's cross-process lock.
func (l *Logger) withFileLock(fn func() error) error {
	if err := flock(l.lockFD); err != nil {
		return fmt.Errorf("%w: lock: %v", ErrUnavailable, err)
	}
	defer funlock(l.lockFD)
	return fn()
}

// loadOrCreateKey reads the hex HMAC key, creating 32 random bytes on first
// use. Callers hold the trail lock, so two processes never make two keys.
func loadOrCreateKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, fmt.Errorf("%w: generate key: %v", ErrUnavailable, err)
		}
		if err := atomicfile.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read key: %v", ErrUnavailable, err)
	}
	return parseKey(path, data)
}

// LoadKey reads the HMAC key of an existing trail, for verification.
func LoadKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("audit: read key: %w", err)
	}
	return parseKey(path, data)
}

func parseKey(path string, data []byte) ([]byte, error) {
	key, err := hex.DecodeString(string(bytes.TrimSpace(data)))
	if err != nil || len(key) < 32 {
		return nil, fmt.Errorf("%w: %s is not a 32-byte hex key", ErrUnavailable, path)
	}
	return key, nil
}

// lastHash reads the end of f and returns the hash of its last record, the
// size up to and including the last newline, and how many torn bytes follow
// it. An empty file has no last hash.
func lastHash(f *os.File, key []byte) (hash string, good int64, torn int64, err error) {
	fi, err := f.Stat()
	if err != nil {
		return "", 0, 0, fmt.Errorf("%w: %v", ErrUnavailable, err)
	}
	size := fi.Size()
	for chunk := int64(64 << 10); ; chunk *= 4 {
		start := max(size-chunk, 0)
		buf := make([]byte, size-start)
		if _, err := f.ReadAt(buf, start); err != nil && !errors.Is(err, io.EOF) {
			return "", 0, 0, fmt.Errorf("%w: read %s: %v", ErrUnavailable, f.Name(), err)
		}
		end := bytes.LastIndexByte(buf, '\n')
		if end < 0 && start > 0 {
			continue // the last line is longer than the chunk
		}
		good = start + int64(end) + 1
		torn = size - good
		if end < 0 {
			return "", 0, torn, nil // no complete line at all
		}
		lineStart := bytes.LastIndexByte(buf[:end], '\n') + 1
		if lineStart == 0 && start > 0 {
			continue
		}
		r, err := unseal(key, buf[lineStart:end])
		if err != nil {
			return "", 0, 0, fmt.Errorf("%w: last record of %s: %v", ErrUnavailable, f.Name(), err)
		}
		return r.Hash, good, torn, nil
	}
}

//go:build !linux

package atomicfile

type watcher struct{ fd *fdBox }

type fdBox struct{}

func (*fdBox) close() error { return nil }

func newWatcher([]string) (*watcher, error) { return nil, ErrWatchUnsupported }

func (*watcher) close() error { return nil }

func (*watcher) drain() (bool, error) { return true, ErrWatchUnsupported }

func (*watcher) await(func() bool) error { return ErrWatchUnsupported }

func (*watcher) interrupt(bool) {}

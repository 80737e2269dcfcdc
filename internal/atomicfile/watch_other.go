//go:build !linux

package atomicfile

type watcher struct{}

func newWatcher([]string) (*watcher, error) { return nil, ErrWatchUnsupported }

func (*watcher) closer() func() { return func() {} }

func (*watcher) drain() (bool, error) { return true, ErrWatchUnsupported }

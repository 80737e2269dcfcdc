package pki

// Loads reports how many times the checker has read its file.
func (c *RevocationChecker) Loads() uint64 { return c.Generation() }

// Statted reports how many times checks and Watch statted the store and
// its log.
func (c *RevocationChecker) Statted() uint64 { return c.stats.Load() }

// Watched reports whether the checker has a directory watch.
func (c *RevocationChecker) Watched() bool { return c.watch != nil }

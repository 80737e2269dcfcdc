package pki

// Loads reports how many times the checker has read its file.
func (c *RevocationChecker) Loads() uint64 { return c.Generation() }

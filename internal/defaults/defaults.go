// Package defaults fills the zero fields of an options struct with their
// defaults, one line per field, so that every constructor (server's
// gateway, stream and HTTP transports, the bridge) treats zero as "use the
// default" the same way.
package defaults

// Set sets *p to def if *p is the zero value of its type. Fields whose zero
// is meaningful (a reserve of none, say) need a sentinel of their own and
// are not for Set.
func Set[T comparable](p *T, def T) {
	var zero T
	if *p == zero {
		*p = def
	}
}

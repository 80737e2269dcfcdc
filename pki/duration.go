package pki

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseDuration reads a certificate lifetime: a Go duration ("24h", "90m") or
// whole days ("30d"), the unit people think of lifetimes in. Range checks
// (positive, before the CA expires) are Issue's.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err == nil && n <= 365*100 && n >= -365*100 {
			return time.Duration(n) * 24 * time.Hour, nil
		}
	} else if d, err := time.ParseDuration(s); err == nil {
		return d, nil
	}
	return 0, fmt.Errorf("%w: %q: want a duration such as 24h, 90m or 30d", ErrInvalidDuration, s)
}

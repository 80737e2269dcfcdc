package pki

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nefia/nefia/config"
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

// CheckClientDuration is the one check of a requested client certificate
// lifetime, run by the CLI and the issue_client tool alike (issue 10 item
// 8): at least config.MinClientDuration, since a shorter certificate is
// expired, or nearly so, on arrival; and at most max, the configured
// mcp.mtls.client_max_duration (no upper bound when max is 0). Issue itself
// still checks the CA's expiry. The error wraps ErrInvalidDuration.
func CheckClientDuration(d, max time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%w: %s must be positive", ErrInvalidDuration, d)
	}
	if d < config.MinClientDuration {
		return fmt.Errorf("%w: %s is shorter than the minimum of %s (a certificate that short is expired on arrival)",
			ErrInvalidDuration, d, formatDuration(config.MinClientDuration))
	}
	if max > 0 && d > max {
		return fmt.Errorf("%w: %s is longer than the maximum of %s (mcp.mtls.client_max_duration)",
			ErrInvalidDuration, formatDuration(d), formatDuration(max))
	}
	return nil
}

// formatDuration renders a lifetime the way ParseDuration reads it: whole
// days as "30d", anything else as a Go duration.
func formatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d > 0 && d%day == 0 {
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	return d.String()
}

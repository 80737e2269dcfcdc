package audit

import (
	"fmt"
	"time"
)

// Begin is "no audit, no action" for a state-changing action: it durably
// records that r is starting (outcome "started") and returns the function
// that records how it ended. If the starting record cannot be written, the
// caller must not act: Begin's error wraps ErrUnavailable.
//
// The ending record repeats r with the outcome, the result fields given and
// the duration; it is durable too. Its failure is returned (and logged) but
// cannot undo the action, which the starting record already covers.
func (l *Logger) Begin(r Record) (end func(outcome string, result map[string]any, err error) error, _ error) {
	start := time.Now()
	begin := r
	begin.Outcome = OutcomeStarted
	if err := l.Append(begin, true); err != nil {
		return nil, err
	}
	return func(outcome string, result map[string]any, actionErr error) error {
		done := r
		done.Outcome = outcome
		done.Result = Redact(result)
		done.DurationMS = float64(time.Since(start).Microseconds()) / 1000
		if actionErr != nil {
			done.Error = actionErr.Error()
		}
		if err := l.Append(done, true); err != nil {
			return fmt.Errorf("action done but not recorded: %w", err)
		}
		return nil
	}, nil
}

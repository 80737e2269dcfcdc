package upstream

import "context"

// connFor returns the upstream session a forwarded request of ctx's
// caller goes on: the shared one, or an error saying the upstream is down.
func (u *upstream) connFor(_ context.Context) (*conn, error) {
	u.mu.Lock()
	cn := u.cur
	u.mu.Unlock()
	if cn == nil {
		return nil, u.downError()
	}
	return cn, nil
}

package audit

import (
	crand "crypto/rand"
	"math/rand/v2"

	"github.com/google/uuid"
)

// idSource makes record ids: random (version 4) UUIDs, as before, drawn
// from a ChaCha8 stream seeded once from crypto/rand rather than a
// crypto/rand read per record (issue 16 item 1). ChaCha8 is a
// cryptographically strong generator, so ids stay unguessable. Not safe
// for concurrent use: the Logger draws under its mutex.
type idSource struct {
	r *rand.ChaCha8
}

func newIDSource() *idSource {
	var seed [32]byte
	crand.Read(seed[:]) // never fails (Go 1.24+: it crashes the program instead)
	return &idSource{r: rand.NewChaCha8(seed)}
}

// next returns a new random UUID in its canonical text form.
func (s *idSource) next() string {
	var u uuid.UUID
	s.r.Read(u[:])
	u[6] = u[6]&0x0f | 0x40 // version 4
	u[8] = u[8]&0x3f | 0x80 // RFC 4122 variant
	return u.String()
}

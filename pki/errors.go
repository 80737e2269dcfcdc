package pki

import (
	"errors"
	"fmt"
)

var (
	// ErrInvalidName is returned for a certificate name outside [A-Za-z0-9][A-Za-z0-9._-]{0,63}.
	ErrInvalidName = errors.New("pki: invalid name")
	// ErrInvalidRole is returned for a role other than agent or operator.
	ErrInvalidRole = errors.New("pki: invalid role")
	// ErrInvalidDuration is returned for a validity period that is zero, negative or past the CA's expiry.
	ErrInvalidDuration = errors.New("pki: invalid duration")
	// ErrInvalidHost is returned for a --hosts entry that is neither an IP address nor a DNS name.
	ErrInvalidHost = errors.New("pki: invalid host")
	// ErrInvalidCSR is returned for a CSR that does not parse, has a bad signature or an unsupported key.
	ErrInvalidCSR = errors.New("pki: invalid CSR")
	// ErrInvalidSerial is returned for a serial that is not a positive hexadecimal number.
	ErrInvalidSerial = errors.New("pki: invalid serial")
	// ErrInvalidReason is returned for a revocation reason that is too long or holds control or format characters.
	ErrInvalidReason = errors.New("pki: invalid reason")
	// ErrCAExists is returned by Init when a CA is already present and Force is not set.
	ErrCAExists = errors.New("pki: a CA already exists")
	// ErrNoCA is returned when an operation needs the CA and none has been initialized.
	ErrNoCA = errors.New("pki: no CA found (run 'nefia mtls init' first)")
	// ErrAlreadyRevoked is returned (wrapped, with the existing record) when a serial is revoked twice.
	ErrAlreadyRevoked = errors.New("pki: serial already revoked")
	// ErrCorruptState is returned when a state file exists but cannot be parsed; it is never replaced silently.
	ErrCorruptState = errors.New("pki: corrupt state file")
	// ErrFileExists is returned when writing a client bundle would overwrite a key without Force.
	ErrFileExists = errors.New("pki: file exists")
	// ErrInvalidOutDir is returned for a bundle destination that must not or cannot receive a bundle (CheckOutDir).
	ErrInvalidOutDir = errors.New("pki: invalid output directory")
	// ErrOutDirInStateDir is the ErrInvalidOutDir of a destination in the state directory, where a bundle could replace the CA key.
	ErrOutDirInStateDir = fmt.Errorf("%w: in the state directory", ErrInvalidOutDir)
	// ErrRevocationUnavailable is returned by the checker when the revocation store cannot be read (fail closed).
	ErrRevocationUnavailable = errors.New("pki: revocation store unavailable")
)

// ErrRevoked is returned by the revocation checker for a revoked certificate.
var ErrRevoked = errors.New("pki: certificate revoked")

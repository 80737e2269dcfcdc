package ops

import (
	"errors"
	"fmt"
)

// Fields an InputError can name. Each edge maps them to its own spelling: a
// flag for the CLI, an argument for the tool.
const (
	FieldHosts       = "hosts"
	FieldForce       = "force"
	FieldName        = "name"
	FieldRole        = "role"
	FieldDuration    = "duration"
	FieldCSR         = "csr"
	FieldOutDir      = "out_dir"
	FieldP12         = "p12"
	FieldP12Password = "p12_password"
	FieldSerial      = "serial"
	FieldReason      = "reason"
)

// InputError is input an operation refuses before changing or recording
// anything (except an invalid CSR, which pki finds while issuing and which
// is recorded as a failed operation). Field is one of the Field constants;
// Err keeps the pki sentinel for errors.Is.
type InputError struct {
	Field string
	Err   error
}

func (e *InputError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

func inputErr(field string, err error) error { return &InputError{Field: field, Err: err} }

func inputErrf(field, format string, args ...any) error {
	return &InputError{Field: field, Err: fmt.Errorf(format, args...)}
}

var (
	// ErrUnaudited refuses a state change whose starting audit record could
	// not be written: nothing was changed.
	ErrUnaudited = errors.New("refused, nothing changed: the audit trail is unavailable")
	// ErrOutcomeUnrecorded is returned with a complete result: the change
	// was made (its started record covers it) but its ending record could
	// not be written. The edges report success and say so, or fail, as
	// suits them; the operation still finished (sessions closed, logs).
	ErrOutcomeUnrecorded = errors.New("done, but its outcome could not be recorded on the audit trail")
	// ErrPermission refuses an actor acting above its authority.
	ErrPermission = errors.New("permission denied")
	// ErrNotEnabled is Init's error when the CA and server certificate were
	// created but mcp.mtls.enabled could not be set in the configuration.
	ErrNotEnabled = errors.New("the CA and server certificate were created, but setting mcp.mtls.enabled: true in the configuration failed")
)

// UnwrittenError is an issued certificate whose files (or PKCS#12 bundle)
// could not be written. Nobody holds its key, so it was revoked (issue 10
// item 7); RevokeErr is set when that revocation failed too and the
// certificate is still active.
type UnwrittenError struct {
	Serial    string
	What      string // "its files" or "its PKCS#12 bundle"
	WriteErr  error
	RevokeErr error
}

func (e *UnwrittenError) Error() string {
	if e.RevokeErr != nil {
		return fmt.Sprintf("certificate %s was issued, but writing %s failed (%v), and revoking it failed too (%v)", e.Serial, e.What, e.WriteErr, e.RevokeErr)
	}
	return fmt.Sprintf("certificate %s was issued, but writing %s failed, so it was revoked: %v", e.Serial, e.What, e.WriteErr)
}

func (e *UnwrittenError) Unwrap() error { return e.WriteErr }

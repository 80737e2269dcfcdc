package config

import "errors"

// Each of these marks a problem with the file's contents (as opposed to I/O),
// which the CLI reports as a usage error; test for them with errors.Is.
var (
	// ErrMalformed means the file is not YAML of the expected shape: a syntax error, a value of the wrong type, or more than one document.
	ErrMalformed = errors.New("malformed YAML")
	// ErrUnknownKey means a key is not part of the schema, usually a typo that would otherwise silently leave a default in place.
	ErrUnknownKey = errors.New("unknown key")
	// ErrVersion means the version key is missing or not CurrentVersion, so the file may mean something this build does not understand.
	ErrVersion = errors.New("unsupported version")
	// ErrInvalid means a key is present and well typed but its value is out of range or unusable.
	ErrInvalid = errors.New("invalid value")
)

// ErrNoConfig means Reload found no configuration: the file is missing or
// holds no keys. At start that means the defaults (Load); for a running
// process it is no reason to drop what runs.
var ErrNoConfig = errors.New("no configuration to reload")

// keyError is one problem with one key. It names the key in its message so
// that a user can find the line to fix, and unwraps to its sentinel so that
// callers can classify it.
type keyError struct {
	key, msg string
	kind     error
}

func (e *keyError) Error() string { return e.key + ": " + e.msg }
func (e *keyError) Unwrap() error { return e.kind }

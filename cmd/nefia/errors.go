package main

import (
	"errors"
	"strings"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
)

// Exit statuses: scripts tell "you asked for something wrong" from "nefia or
// its state is broken".
const (
	exitUsage    = 2
	exitInternal = 3
)

// usageError marks an error as the caller's to fix (exit 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usage(err error) error { return usageError{err} }

// inputErrors are the sentinels that mean the request, not the system, was
// wrong.
var inputErrors = []error{
	pki.ErrInvalidName, pki.ErrInvalidRole, pki.ErrInvalidDuration, pki.ErrInvalidHost,
	pki.ErrInvalidCSR, pki.ErrInvalidSerial, pki.ErrCAExists, pki.ErrNoCA, pki.ErrReplaceSharedCA, pki.ErrJoinSharedCA, pki.ErrForeignCA,
	pki.ErrFileExists, pki.ErrInvalidOutDir, pki.ErrInvalidReason,
	config.ErrMalformed, config.ErrUnknownKey, config.ErrVersion, config.ErrInvalid,
}

func exitCode(err error) int {
	var own interface{ ExitCode() int }
	if errors.As(err, &own) {
		return own.ExitCode()
	}
	var broken errChainBroken
	if errors.As(err, &broken) {
		return 1
	}
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	for _, target := range inputErrors {
		if errors.Is(err, target) {
			return exitUsage
		}
	}
	return exitInternal
}

// errorLine renders err as the one line the operator sees: package prefixes
// that help in logs ("pki: ") are noise at a prompt.
func errorLine(err error) string {
	msg := err.Error()
	for _, prefix := range []string{"pki: ", "config: ", "atomicfile: "} {
		msg = strings.ReplaceAll(msg, prefix, "")
	}
	// Errors quote file contents and peer input (a name, a serial, a path):
	// a newline becomes "; " as before, every other control character is
	// escaped.
	return termSafe(strings.ReplaceAll(msg, "\n", "; "))
}

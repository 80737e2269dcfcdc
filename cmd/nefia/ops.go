package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/nefia/nefia/identity"
	"github.com/nefia/nefia/ops"
	"github.com/nefia/nefia/pki"
)

// service is the operation layer over this session's state directory:
// every state change is recorded on the trail, opened per command.
func (s *session) service() *ops.Service {
	return &ops.Service{
		Store:      s.store,
		ConfigPath: s.configPath,
		Logger:     slog.New(quiet{s.log.Handler()}),
		// The running gateway's revocation poll closes a revoked serial's
		// sessions; the CLI has none of its own.
		Sessions:    nil,
		WriteBundle: s.env.writeBundle,
		Audit: func() (ops.Trail, func(), error) {
			trail, err := s.openAudit()
			if err != nil {
				return nil, nil, err
			}
			return trail, func() { _ = trail.Close() }, nil
		},
	}
}

// cliOperator is who acts at the shell: the local operator, transport cli.
func cliOperator() identity.Agent { return identity.LocalOperator(identity.TransportCLI) }

// flags names each ops input field as the CLI spells it.
var flags = map[string]string{
	ops.FieldHosts:       "--hosts",
	ops.FieldForce:       "--force",
	ops.FieldName:        "--name",
	ops.FieldRole:        "--role",
	ops.FieldDuration:    "--duration",
	ops.FieldCSR:         "--csr",
	ops.FieldOutDir:      "--out-dir",
	ops.FieldP12:         "--p12/--csr", // the two cannot be combined
	ops.FieldP12Password: "--p12-password-file",
	ops.FieldSerial:      "--serial",
	ops.FieldReason:      "--reason",

	ops.FieldRevokePrevious: "--revoke-previous",
}

// cliError renders an operation's error: bad input as a one-line usage
// error naming the flag (exit 2), the rest as they are, with what the
// operator can do next.
func cliError(err error) error {
	var in *ops.InputError
	var unwritten *ops.UnwrittenError
	switch {
	case errors.Is(err, pki.ErrCAExists):
		return usage(fmt.Errorf("%w; pass --force to replace it (the old files are archived)", err))
	case errors.As(err, &in) && errors.Is(in.Err, pki.ErrFileExists):
		return usage(fmt.Errorf("%w (pass --force to replace it)", in.Err))
	case errors.As(err, &in):
		name, ok := flags[in.Field]
		if !ok {
			name = in.Field
		}
		return usage(fmt.Errorf("%s: %w", name, in.Err))
	case errors.As(err, &unwritten) && unwritten.RevokeErr != nil:
		return fmt.Errorf("%w; revoke it with 'nefia mtls revoke --serial %s'", err, unwritten.Serial)
	}
	return err
}

// quiet demotes an operation's informational lines to debug: at the shell
// the command's own output says what happened, and stderr stays for
// warnings and errors, as it was before the operations logged themselves.
type quiet struct{ slog.Handler }

func demote(l slog.Level) slog.Level {
	if l < slog.LevelWarn {
		return slog.LevelDebug
	}
	return l
}

func (q quiet) Enabled(ctx context.Context, l slog.Level) bool {
	return q.Handler.Enabled(ctx, demote(l))
}

func (q quiet) Handle(ctx context.Context, r slog.Record) error {
	r.Level = demote(r.Level)
	return q.Handler.Handle(ctx, r)
}

func (q quiet) WithAttrs(as []slog.Attr) slog.Handler { return quiet{q.Handler.WithAttrs(as)} }
func (q quiet) WithGroup(n string) slog.Handler       { return quiet{q.Handler.WithGroup(n)} }

package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/nefia/nefia/internal/atomicfile"
	"github.com/nefia/nefia/pki"
)

// crlRefreshInterval is how often a running gateway checks that
// mtls_ca.crl is current (pki.RefreshCRL signs a new one within
// pki.CRLRefreshMargin of its nextUpdate, or when a revocation's CRL write
// failed): hourly keeps a failed write from lasting long and costs a file
// read when nothing changed.
const crlRefreshInterval = time.Hour

func newCRLCmd(e *env, g *globals) *cobra.Command {
	var out string
	var der bool
	cmd := &cobra.Command{
		Use:   "crl",
		Short: "Print or write the CA's revocation list (CRL) for other TLS terminators",
		Long: `Print the CA's certificate revocation list (X.509 v2, signed by the CA),
or write it to a file with --out, for TLS terminators other than nefia that
trust its CA (nginx ssl_crl, HAProxy crl-file, Envoy crl). nefia keeps it in
the state directory as mtls_ca.crl and re-signs it on every revocation and
before it goes stale; this command re-signs it first when it is stale or
missing. Terminators read a CRL when they start or reload: reload them after
copying it.`,
		Example: `  nefia mtls crl > /etc/nginx/nefia.crl
  nefia mtls crl --out /etc/nginx/nefia.crl && nginx -s reload
  nefia mtls crl --der --out nefia.crl.der`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := g.open(e)
			if err != nil {
				return err
			}
			toFile := cmd.Flags().Changed("out")
			if toFile {
				if err := checkCRLOut(s.stateDir, out); err != nil {
					return usage(fmt.Errorf("--out: %w", err))
				}
			} else if der && isTerminal(e.stdout) {
				return usage(errors.New("--der writes binary: add --out FILE or redirect stdout"))
			}
			raw, info, err := s.store.CurrentCRL()
			if err != nil {
				return err
			}
			if info.Regenerated {
				s.log.Info("CRL re-signed", "number", info.Number, "entries", info.Entries, "next_update", info.NextUpdate)
			}
			data := raw
			if !der {
				data = pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: raw})
			}
			if !toFile {
				_, err := e.stdout.Write(data)
				return err
			}
			if err := atomicfile.WriteFile(out, data, 0o644); err != nil {
				return fmt.Errorf("write the CRL to %s: %w", out, err)
			}
			fmt.Fprintf(e.stdout, "Wrote CRL number %d (%d revoked serials, next update %s) to %s\n",
				info.Number, info.Entries, info.NextUpdate.Format(time.RFC3339), termSafe(out))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "", "write the CRL to this file (atomically, mode 0644) instead of stdout")
	f.BoolVar(&der, "der", false, "DER instead of PEM")
	return cmd
}

// checkCRLOut refuses, before anything is signed, a --out that cannot or
// must not receive a CRL: empty, a directory, in the state directory
// (where it could replace the CA key), in a directory that does not exist,
// or an existing file that is not a CRL (replacing a CRL is the point of
// --out; replacing anything else is a mistake).
func checkCRLOut(stateDir, out string) error {
	if strings.TrimSpace(out) == "" {
		return errors.New("the file name is empty")
	}
	if err := pki.CheckOutDir(stateDir, filepath.Dir(out)); err != nil {
		return err
	}
	if fi, err := os.Stat(filepath.Dir(out)); err != nil || !fi.IsDir() {
		return fmt.Errorf("directory %s does not exist; create it first", filepath.Dir(out))
	}
	fi, err := os.Lstat(out)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s exists and is not a regular file", out)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return err
	}
	if b, _ := pem.Decode(data); b != nil && b.Type == "X509 CRL" {
		data = b.Bytes
	}
	if _, err := x509.ParseRevocationList(data); err != nil && len(data) > 0 {
		return fmt.Errorf("%s exists and is not a CRL; remove it or choose another file", out)
	}
	return nil
}

// startCRLRefresh keeps mtls_ca.crl current while the gateway serves
// (issue 13 item 6): it refreshes now and then every interval. The
// returned function stops it and waits for a refresh in progress.
func startCRLRefresh(ctx context.Context, store *pki.Store, log *slog.Logger, every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			info, err := store.RefreshCRL(false)
			switch {
			case err != nil:
				log.Warn("CRL refresh failed; other TLS terminators may get a stale CRL", "file", store.Path(pki.CRLFile), "err", err)
			case info.Regenerated:
				log.Info("CRL re-signed", "number", info.Number, "entries", info.Entries, "next_update", info.NextUpdate)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

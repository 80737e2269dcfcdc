package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/nefia/nefia/config"
	"github.com/nefia/nefia/pki"
	"github.com/nefia/nefia/store/etcdstore"
)

// newStoreCmd is 'nefia mtls store': the inventory and revocation
// backends (issue 15 item 4).
func newStoreCmd(e *env, g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "store",
		Short: "Move the inventory and the revocations between the state directory and etcd",
		Args:  groupArgs,
		RunE:  groupRun,
	}
	cmd.AddCommand(newMigrateCmd(e, g))
	return cmd
}

// migrateResult is what a migration copied and what it found there.
type migrateResult struct {
	To             string `json:"to"`
	Certificates   int    `json:"certificates"`
	Revocations    int    `json:"revocations"`
	AddedCerts     int    `json:"added_certificates"`
	AddedRevoked   int    `json:"added_revocations"`
	VerifiedCopies bool   `json:"verified"`
}

func newMigrateCmd(e *env, g *globals) *cobra.Command {
	var to string
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "migrate --to etcd|file",
		Short: "Copy the inventory and the revocations into etcd (--to etcd) or back into the state directory (--to file)",
		Long: `Copies every issued certificate and every revocation from the state
directory's files into etcd (mcp.mtls.store.etcd), or from etcd back into
the files. --to etcd creates the store under the prefix (its marker key
<prefix>meta) if it does not exist yet: gateways and the CLI refuse a
prefix without one, so run it once even for an empty fleet. Entries already at the destination are kept, so running it
again changes nothing; afterwards every source entry is read back from the
destination and compared. Switch mcp.mtls.store.backend afterwards.`,
		Example: `  nefia mtls store migrate --to etcd
  nefia mtls store migrate --to file --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if to != config.StoreEtcd && to != config.StoreFile {
				return usage(fmt.Errorf("--to %q: want etcd or file", to))
			}
			s, err := g.open(e)
			if err != nil {
				return err
			}
			loaded, err := config.Load(s.configPath)
			if err != nil {
				return usage(fmt.Errorf("read the configuration: %w", err))
			}
			ec := loaded.MCP.MTLS.Store.Etcd
			if len(ec.Endpoints) == 0 {
				return usage(errors.New("mcp.mtls.store.etcd.endpoints: empty; say where etcd is before migrating (nefia.yaml)"))
			}
			base := filepath.Dir(s.configPath)
			for _, p := range []*string{&ec.CAFile, &ec.CertFile, &ec.KeyFile} {
				if *p != "" && !filepath.IsAbs(*p) {
					*p = filepath.Join(base, *p)
				}
			}
			cli, err := etcdstore.Dial(ec)
			if err != nil {
				return err
			}
			defer cli.Close()
			etcd := etcdstore.New(cli, ec.PrefixOrDefault())
			files := pki.NewStore(s.stateDir, pki.WithClock(e.clock), pki.WithLogger(s.log))
			var res migrateResult
			if to == config.StoreEtcd {
				// With init on a host without a CA (pki's checkNoFleet),
				// the only way a store comes to exist under a prefix: a
				// prefix without its marker is refused everywhere.
				// The store records this host's CA as its fleet's, and a
				// store that records another refuses the copy.
				ca, err := files.CAFingerprint()
				if err != nil && !errors.Is(err, pki.ErrNoCA) {
					return err
				}
				if _, created, err := etcd.CreateWithCA(e.clock.Now(), ca); err != nil {
					return err
				} else if created {
					s.log.Info("etcd store created", "prefix", etcd.Prefix())
				}
				res, err = migrateToEtcd(files, etcd)
			} else {
				res, err = migrateToFile(etcd, files)
			}
			if err != nil {
				return err
			}
			s.log.Info("store migrated", "to", to, "certificates", res.Certificates, "revocations", res.Revocations,
				"added_certificates", res.AddedCerts, "added_revocations", res.AddedRevoked)
			if asJSON {
				return writeJSON(e.stdout, res)
			}
			_, err = fmt.Fprintf(e.stdout, "%d certificate(s) and %d revocation(s) are in %s (%d and %d added now); verified.\n",
				res.Certificates, res.Revocations, to, res.AddedCerts, res.AddedRevoked)
			return err
		},
	}
	cmd.Flags().StringVar(&to, "to", "", "destination: etcd or file")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the result as JSON")
	return cmd
}

// readFiles reads the state directory's inventory and revocations.
func readFiles(files *pki.Store) ([]pki.IssuedCert, []pki.Revocation, error) {
	list, err := files.List()
	if err != nil {
		return nil, nil, fmt.Errorf("read the inventory: %w", err)
	}
	certs := make([]pki.IssuedCert, len(list))
	for i, c := range list {
		certs[i] = c.IssuedCert
	}
	revs, err := files.Revocations()
	if err != nil {
		return nil, nil, fmt.Errorf("read the revocations: %w", err)
	}
	return certs, revs, nil
}

func migrateToEtcd(files *pki.Store, etcd *etcdstore.Store) (migrateResult, error) {
	res := migrateResult{To: config.StoreEtcd}
	certs, revs, err := readFiles(files)
	if err != nil {
		return res, err
	}
	for _, c := range certs {
		err := etcd.AddIssued(c)
		switch {
		case err == nil:
			res.AddedCerts++
		case !errors.Is(err, pki.ErrSerialTaken):
			return res, err
		}
	}
	for _, r := range revs {
		_, err := etcd.AddRevocation(r)
		switch {
		case err == nil:
			res.AddedRevoked++
		case !errors.Is(err, pki.ErrAlreadyRevoked):
			return res, err
		}
	}
	gotCerts, err := etcd.Issued()
	if err != nil {
		return res, err
	}
	gotRevs, err := etcd.Revoked()
	if err != nil {
		return res, err
	}
	return verified(res, certs, revs, gotCerts, gotRevs)
}

func migrateToFile(etcd *etcdstore.Store, files *pki.Store) (migrateResult, error) {
	res := migrateResult{To: config.StoreFile}
	certs, err := etcd.Issued()
	if err != nil {
		return res, err
	}
	revs, err := etcd.Revoked()
	if err != nil {
		return res, err
	}
	if res.AddedCerts, res.AddedRevoked, err = files.ImportRecords(certs, revs); err != nil {
		return res, err
	}
	gotCerts, gotRevs, err := readFiles(files)
	if err != nil {
		return res, err
	}
	return verified(res, certs, revs, gotCerts, gotRevs)
}

// verified checks that every source entry is at the destination: each
// certificate identical (same fingerprint, name, role and validity), each
// revoked serial revoked. A certificate recorded differently at the
// destination under the same serial is a conflict to resolve by hand.
func verified(res migrateResult, certs []pki.IssuedCert, revs []pki.Revocation, gotCerts []pki.IssuedCert, gotRevs []pki.Revocation) (migrateResult, error) {
	byserial := make(map[string]pki.IssuedCert, len(gotCerts))
	for _, c := range gotCerts {
		byserial[c.Serial] = c
	}
	for _, c := range certs {
		got, ok := byserial[c.Serial]
		if !ok {
			return res, fmt.Errorf("verify: certificate %s (%s) is missing at the destination", c.Serial, c.Name)
		}
		if got.Fingerprint != c.Fingerprint || got.Name != c.Name || got.Role != c.Role || !got.NotAfter.Equal(c.NotAfter) {
			return res, fmt.Errorf("verify: serial %s is recorded differently at the destination (%s %s there, %s %s here); resolve it by hand",
				c.Serial, got.Name, got.Fingerprint, c.Name, c.Fingerprint)
		}
	}
	revoked := make(map[string]bool, len(gotRevs))
	for _, r := range gotRevs {
		revoked[r.Serial] = true
	}
	for _, r := range revs {
		if !revoked[r.Serial] {
			return res, fmt.Errorf("verify: revocation of %s is missing at the destination", r.Serial)
		}
	}
	res.Certificates, res.Revocations, res.VerifiedCopies = len(gotCerts), len(gotRevs), true
	return res, nil
}

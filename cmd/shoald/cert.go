package main

import (
	"errors"
	"fmt"
	"regexp"

	"github.com/shoal-ha/shoal/cluster"
	"github.com/shoal-ha/shoal/internal/adminauth"
	"github.com/spf13/cobra"
)

var certName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// newCertCmd issues client certificates for the admin API from the
// node's local CA.
func newCertCmd() *cobra.Command {
	var config, name, out string
	var readOnly bool
	cmd := &cobra.Command{
		Use:   "cert --config node.hcl --name NAME --out DIR [--read-only]",
		Short: "Issue a client certificate for the admin API from the node's local CA",
		Long: `Issue a client certificate from the local CA the node's configuration
names (tls.auto_dir, by default <data_dir>/pki) and write NAME.pem and
NAME-key.pem into DIR. It is an admin certificate, or with --read-only one
whose subject carries OU=read-only: it may read every admin route but
change nothing. A cluster that uses its own CA (tls.ca_file) issues such
certificates with that CA.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if config == "" || name == "" || out == "" {
				return &exitError{code: 2, err: errors.New("--config, --name and --out are required")}
			}
			if !certName.MatchString(name) {
				return &exitError{code: 2, err: fmt.Errorf("--name %q: letters, digits, '.', '_' and '-', at most 63", name)}
			}
			cfg, err := cluster.LoadFile(config)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			ca := cfg.TLSAutoDir()
			if ca == "" {
				return &exitError{code: 2, err: errors.New("the node uses its own CA files (tls.ca_file): issue client certificates with that CA (OU=read-only for the read-only role)")}
			}
			var units []string
			role := adminauth.RoleAdmin
			if readOnly {
				units, role = []string{adminauth.ReadOnlyUnit}, adminauth.RoleReadOnly
			}
			files, err := cluster.IssueClientCert(ca, out, name, units)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "issued a %s certificate for %s:\n  --cacert %s --cert %s --key %s\n", role, name, files.CA, files.Cert, files.Key)
			return nil
		},
	}
	cmd.Flags().StringVarP(&config, "config", "c", "", "node configuration file naming the local CA")
	cmd.Flags().StringVar(&name, "name", "", "the certificate's common name (who uses it)")
	cmd.Flags().StringVar(&out, "out", "", "directory to write NAME.pem and NAME-key.pem into")
	cmd.Flags().BoolVar(&readOnly, "read-only", false, "a read-only certificate (OU=read-only)")
	return cmd
}

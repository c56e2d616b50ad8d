package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/fleetprov/fleetprov/cmd/internal/cli"
	"github.com/fleetprov/fleetprov/core/config"
)

const starter = `# A starter fleetprov config (config.toml v1). Validate with: publisher validate %[1]s
# Editor completion: schemas/config.schema.json of the fleetprov repository (see its README).
version = 1

# Admin users' keys sign jobs for this device.
[users.%[2]s]
isAdmin = true
ssh_key = %[3]q

[network.firewall.inbound.wan]
tcp = [443]

[activation]
required = ["web"]        # must be active after an apply, or the device rolls back
timeout_seconds = 120

# Rootless (privileged = false): runs as the app user on Network=pasta, ports on 127.0.0.1.
[containers.container.web]
privileged = false
[containers.container.web.Unit]
Description = "Example web server"
[containers.container.web.Container]
Image = "docker.io/library/nginx:alpine"
PublishPort = ["8081:80"]
[containers.container.web.Install]
WantedBy = ["default.target"]
`

func initCommand() *cli.Command {
	return &cli.Command{
		Name:  "init",
		Args:  "--pub KEY.pub [-o config.toml]",
		Short: "write a starter config.toml whose admin is your SSH key",
		Setup: func(fs *flag.FlagSet) func(context.Context, []string, cli.IO) error {
			pub := fs.String("pub", "", "OpenSSH public key file of the admin (e.g. ~/.ssh/id_ed25519.pub)")
			user := fs.String("user", "admin", "the admin user's name")
			out := fs.String("o", "config.toml", "output file (- for stdout); an existing file is not overwritten")
			return func(ctx context.Context, args []string, stdio cli.IO) error {
				if *pub == "" {
					return cli.Usagef("--pub is required")
				}
				raw, err := os.ReadFile(*pub)
				if err != nil {
					return cli.Usagef("reading --pub: %v", err)
				}
				key, comment, _, _, err := ssh.ParseAuthorizedKey(raw)
				if err != nil {
					return cli.Usagef("--pub %s is not an OpenSSH public key: %v", *pub, err)
				}
				line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(key)))
				if comment != "" {
					line += " " + comment
				}
				doc := fmt.Sprintf(starter, *out, *user, line)
				if _, _, err := config.Parse([]byte(doc), config.Options{}); err != nil {
					return fmt.Errorf("starter config does not validate: %w", err)
				}
				if *out == "-" {
					_, err := fmt.Fprint(stdio.Stdout, doc)
					return err
				}
				f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
				if err != nil {
					return fmt.Errorf("writing %s: %w", *out, err)
				}
				defer f.Close()
				if _, err := f.WriteString(doc); err != nil {
					return err
				}
				fmt.Fprintf(stdio.Stdout, "wrote %s (admin %s, key %s)\n", *out, *user, ssh.FingerprintSHA256(key))
				return nil
			}
		},
	}
}

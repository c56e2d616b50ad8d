package config

import (
	"encoding/base64"
	"regexp"
	"strings"

	"golang.org/x/crypto/ssh"
)

var (
	userNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	tokenRE    = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
)

// reservedUsers are system accounts a config must not claim (the app user is added per
// Options).
var reservedUsers = []string{"appsvc", "bin", "chrony", "daemon", "dnsmasq", "nobody", "root",
	"systemd-network", "systemd-resolve", "systemd-timesync"}

// allowedKeyTypes are the OpenSSH key types accepted for users (and so for signers).
var allowedKeyTypes = map[string]bool{
	"ecdsa-sha2-nistp256":                true,
	"ecdsa-sha2-nistp384":                true,
	"ecdsa-sha2-nistp521":                true,
	"sk-ecdsa-sha2-nistp256@openssh.com": true,
	"ssh-ed25519":                        true,
	"sk-ssh-ed25519@openssh.com":         true,
	"ssh-rsa":                            true,
}

func (d *decoder) users(t map[string]any, p Path) map[string]User {
	out := map[string]User{}
	for _, name := range d.keys(t, p) {
		up := p.Key(name)
		ut, ok := d.table(t, p, name)
		if !ok {
			continue
		}
		if !userNameRE.MatchString(name) {
			d.r.Errorf(up, "invalid user name: must match %s", userNameRE)
		} else if isReservedUser(name, d.opts.AppUser) {
			d.r.Errorf(up, "user name %q is reserved for the system", name)
		}
		var u User
		u.IsAdmin, _ = d.boolean(ut, up, "isAdmin")
		u.SSHKey, _ = d.str(ut, up, "ssh_key")
		u.Shell, _ = d.str(ut, up, "shell")
		if u.SSHKey != "" {
			if err := CheckSSHKey(u.SSHKey); err != nil {
				d.r.Errorf(up.Key("ssh_key"), "%s", err.Error())
			}
		}
		out[name] = u
	}
	return out
}

func isReservedUser(name, appUser string) bool {
	if name == appUser {
		return true
	}
	for _, r := range reservedUsers {
		if name == r {
			return true
		}
	}
	return false
}

// keyError is a plain message error for CheckSSHKey.
type keyError string

func (e keyError) Error() string { return string(e) }

// CheckSSHKey reports why line is not exactly one acceptable OpenSSH public key line, or nil.
// The blob must be strict base64 and its embedded type must equal the first field.
func CheckSSHKey(line string) error {
	for _, c := range line {
		if c < 0x20 || c == 0x7f {
			return keyError("invalid ssh_key: contains control characters (exactly one key line expected)")
		}
	}
	fields := strings.Fields(line)
	if len(fields) < 2 {
		return keyError("invalid ssh_key: expected \"<type> <base64-key> [comment]\"")
	}
	if !allowedKeyTypes[fields[0]] {
		return keyError("invalid ssh_key: unsupported key type " + quoteShort(fields[0]) +
			" (use ssh-ed25519, ecdsa-sha2-nistp256/384/521, ssh-rsa or their sk- variants)")
	}
	blob, err := base64.StdEncoding.Strict().DecodeString(fields[1])
	if err != nil {
		return keyError("invalid ssh_key: the key is not valid base64")
	}
	pub, err := ssh.ParsePublicKey(blob)
	if err != nil {
		return keyError("invalid ssh_key: the key blob does not parse: " + err.Error())
	}
	if pub.Type() != fields[0] {
		return keyError("invalid ssh_key: the key type field " + quoteShort(fields[0]) +
			" does not match the key's embedded type " + quoteShort(pub.Type()))
	}
	return nil
}

func quoteShort(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return `"` + s + `"`
}

func (d *decoder) fleet(t map[string]any, p Path) *Fleet {
	f := &Fleet{}
	if groups, ok := d.strList(t, p, "groups"); ok {
		for i, g := range groups {
			if !tokenRE.MatchString(g) {
				d.r.Errorf(p.Key("groups").Index(i), "invalid group name: must match %s", tokenRE)
			}
		}
		f.Groups = sortedUnique(groups)
	}
	if st, ok := d.table(t, p, "signers"); ok {
		f.Signers = map[string]SignerPolicy{}
		for _, name := range d.keys(st, p.Key("signers")) {
			sp := p.Key("signers").Key(name)
			pt, ok := d.table(st, p.Key("signers"), name)
			if !ok {
				continue
			}
			var pol SignerPolicy
			if ops, ok := d.strList(pt, sp, "ops"); ok {
				pol.Ops = sortedUnique(ops)
			}
			if groups, ok := d.strList(pt, sp, "groups"); ok {
				pol.Groups = sortedUnique(groups)
			}
			f.Signers[name] = pol
		}
	}
	if len(f.Signers) == 0 {
		f.Signers = nil
	}
	return f
}

// Package auth decides who may do what on a device: SSHSIG signatures made and checked
// in-process (github.com/hiddeco/sshsig over golang.org/x/crypto/ssh keys), an OpenSSH
// allowed_signers parser, the signer policy (admin keys of the active config, narrowed by
// its [fleet.signers] table; first-boot rules and the fleet trust file), a replay guard
// whose accepted ids survive restarts, and the single-use nonces of signed HTTP requests.
//
// Both transports (NATS and HTTP) call the same checks. It must not import messaging/,
// net/http or NATS packages.
package auth

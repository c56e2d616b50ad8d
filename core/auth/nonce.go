package auth

import (
	"container/list"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"sync"
	"time"
)

// Nonce store limits (DESIGN.md): single use, 300 s, 16 per client, 1024 overall.
const (
	DefaultNonceTTL       = 300 * time.Second
	DefaultNoncePerClient = 16
	DefaultNonceTotal     = 1024
)

// Nonces issues and consumes single-use nonces for signed HTTP requests. Memory is
// bounded, and a nonce once issued is never evicted before its TTL: past the per-client
// or overall cap, Issue refuses (ErrNonceLimit) instead, so a client with many addresses
// cannot make the operator's outstanding nonce fail. Expired nonces are swept first.
type Nonces struct {
	TTL       time.Duration
	PerClient int
	Total     int
	Now       func() time.Time

	mu       sync.Mutex
	byNonce  map[string]*list.Element
	order    *list.List // oldest first
	byClient map[string]*list.List
}

type nonceEntry struct {
	nonce, client string
	expires       time.Time
	clientElem    *list.Element
}

func (n *Nonces) init() {
	if n.byNonce == nil {
		n.byNonce = map[string]*list.Element{}
		n.order = list.New()
		n.byClient = map[string]*list.List{}
	}
	if n.TTL <= 0 {
		n.TTL = DefaultNonceTTL
	}
	if n.PerClient <= 0 {
		n.PerClient = DefaultNoncePerClient
	}
	if n.Total <= 0 {
		n.Total = DefaultNonceTotal
	}
	if n.Now == nil {
		n.Now = time.Now
	}
}

// Issue returns a fresh nonce for client (its address, see ClientKey), or
// ErrNonceLimit when the client or the store is full of unexpired nonces.
func (n *Nonces) Issue(client string) (string, error) {
	var b [24]byte
	rand.Read(b[:])
	nonce := base64.RawURLEncoding.EncodeToString(b[:])
	n.mu.Lock()
	defer n.mu.Unlock()
	n.init()
	now := n.Now()
	// Nonces expire in issue order (one TTL), so the expired ones are at the front.
	for n.order.Len() > 0 && now.After(n.order.Front().Value.(*nonceEntry).expires) {
		n.remove(n.order.Front())
	}
	if cl := n.byClient[client]; cl != nil && cl.Len() >= n.PerClient {
		return "", fmt.Errorf("%w: %d outstanding nonces for this client; use or let them expire", ErrNonceLimit, cl.Len())
	}
	if n.order.Len() >= n.Total {
		return "", fmt.Errorf("%w: %d outstanding nonces on the device", ErrNonceLimit, n.order.Len())
	}
	cl := n.byClient[client]
	if cl == nil {
		cl = list.New()
		n.byClient[client] = cl
	}
	e := &nonceEntry{nonce: nonce, client: client, expires: n.Now().Add(n.TTL)}
	el := n.order.PushBack(e)
	e.clientElem = cl.PushBack(el)
	n.byNonce[nonce] = el
	return nonce, nil
}

// ClientKey is the nonce owner for a client address: the address itself for IPv4, its
// /64 for IPv6 (one host commonly holds a whole /64, so per-address caps would not
// bound it).
func ClientKey(addr string) string {
	ip := net.ParseIP(addr)
	if ip == nil || ip.To4() != nil {
		return addr
	}
	return ip.Mask(net.CIDRMask(64, 128)).String() + "/64"
}

// Consume uses up a nonce; it fails for an unknown, expired, or another client's nonce.
// The nonce is gone afterwards whatever the outcome: a nonce is single use.
func (n *Nonces) Consume(nonce, client string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.init()
	el, ok := n.byNonce[nonce]
	if !ok {
		return fmt.Errorf("%w: unknown or already used", ErrNonce)
	}
	e := el.Value.(*nonceEntry)
	n.remove(el)
	if n.Now().After(e.expires) {
		return fmt.Errorf("%w: expired", ErrNonce)
	}
	if e.client != client {
		return fmt.Errorf("%w: issued to another client", ErrNonce)
	}
	return nil
}

// Len returns the number of outstanding nonces.
func (n *Nonces) Len() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.init()
	return n.order.Len()
}

func (n *Nonces) remove(el *list.Element) {
	e := el.Value.(*nonceEntry)
	n.order.Remove(el)
	delete(n.byNonce, e.nonce)
	if cl := n.byClient[e.client]; cl != nil {
		cl.Remove(e.clientElem)
		if cl.Len() == 0 {
			delete(n.byClient, e.client)
		}
	}
}

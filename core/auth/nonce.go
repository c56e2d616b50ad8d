package auth

import (
	"container/list"
	"crypto/rand"
	"encoding/base64"
	"fmt"
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
// bounded: past the per-client or overall cap the oldest nonce is evicted.
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

// Issue returns a fresh nonce for client (its address).
func (n *Nonces) Issue(client string) string {
	var b [24]byte
	rand.Read(b[:])
	nonce := base64.RawURLEncoding.EncodeToString(b[:])
	n.mu.Lock()
	defer n.mu.Unlock()
	n.init()
	for cl := n.byClient[client]; cl != nil && cl.Len() >= n.PerClient; cl = n.byClient[client] {
		n.remove(cl.Front().Value.(*list.Element))
	}
	for n.order.Len() >= n.Total {
		n.remove(n.order.Front())
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
	return nonce
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

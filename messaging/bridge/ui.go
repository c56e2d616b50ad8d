package bridge

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"embed"
	"encoding/base64"
	"html/template"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/fleetprov/fleetprov/core/identity"
	"github.com/fleetprov/fleetprov/core/provision"
	"github.com/fleetprov/fleetprov/messaging/wire"
)

//go:embed ui
var uiFS embed.FS

var uiTemplates = template.Must(template.ParseFS(uiFS, "ui/*.html"))

const csrfCookie = "fleetprov_csrf"

func newToken() string {
	var b [24]byte
	rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}

// uiGuard answers 404 once the device is provisioned (or a fleet trust file closes the
// unsigned route), and refuses requests whose Host or Origin could be a DNS rebinding or
// cross-site attack.
func (s *Server) uiGuard(r *http.Request) error {
	if !s.o.Service.FirstBootUnsigned() {
		return errf(wire.ErrNotFound, "not found", nil)
	}
	return s.uiHostGuard(r)
}

// firstBootGuard defends a device that is open to first-boot requests against web pages:
// the Boot UI's Host and Origin checks (DNS rebinding) plus the custom header (cross-site
// simple requests). It applies to every mutating request while the device is open, signed
// or not: a proof-of-possession signature is one a page can make itself.
func (s *Server) firstBootGuard(r *http.Request) error {
	if err := s.uiHostGuard(r); err != nil {
		return err
	}
	if r.Header.Get(wire.FirstBootHeader) == "" {
		return errf(wire.ErrForbidden, "a first-boot request needs the "+wire.FirstBootHeader+" header", nil)
	}
	return nil
}

// uiHostGuard checks Host and Origin/Referer only.
func (s *Server) uiHostGuard(r *http.Request) error {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	allowed := host == "localhost" || net.ParseIP(host) != nil || strings.HasSuffix(host, ".local")
	for _, h := range s.o.Hosts {
		allowed = allowed || strings.EqualFold(host, h)
	}
	if !allowed {
		return errf(wire.ErrForbidden, "host not allowed for the Boot UI; use the device's IP address", nil)
	}
	for _, hdr := range []string{"Origin", "Referer"} {
		v := r.Header.Get(hdr)
		if v == "" {
			continue
		}
		u, err := url.Parse(v)
		if err != nil || u.Host != r.Host {
			return errf(wire.ErrForbidden, hdr+" does not match the device's address", nil)
		}
	}
	return nil
}

// page is what both Boot UI templates render: every asset is inlined (the page must keep
// working after the device is provisioned and the UI routes are gone), under a CSP nonce.
type page struct {
	Device, Fleet, Version, CSRF, Text, JobID, Nonce, Identity string
	Errors                                                     []string
	CSS                                                        template.CSS
	JS                                                         template.JS
	Logo                                                       template.URL
}

var (
	uiCSS  = mustAsset("style.css")
	uiJS   = mustAsset("app.js")
	uiLogo = "data:image/svg+xml;base64," + base64.StdEncoding.EncodeToString([]byte(mustAsset("logo.svg")))
)

func mustAsset(name string) string {
	b, err := uiFS.ReadFile("ui/" + name)
	if err != nil {
		panic(err) // embedded at build time
	}
	return string(b)
}

// render writes a Boot UI page with fresh nonce and assets.
func (s *Server) render(w http.ResponseWriter, status int, tmpl string, p page) error {
	p.Device, p.Fleet, p.Version, p.Nonce = s.o.Service.Device(), s.o.Service.Fleet(), s.o.Service.Version(), newToken()
	if k := s.o.Service.IdentityKey(); k != nil {
		p.Identity = identity.Fingerprint(k)
	}
	p.CSS, p.JS, p.Logo = template.CSS(uiCSS), template.JS(uiJS), template.URL(uiLogo)
	var buf bytes.Buffer
	if err := uiTemplates.ExecuteTemplate(&buf, tmpl, p); err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Content-Security-Policy", "default-src 'none'; img-src data:; style-src 'nonce-"+p.Nonce+"'; script-src 'nonce-"+p.Nonce+"'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	w.Header().Set("X-Frame-Options", "DENY")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
	return nil
}

func (s *Server) renderIndex(w http.ResponseWriter, status int, p page) error {
	p.CSRF = newToken()
	http.SetCookie(w, &http.Cookie{Name: csrfCookie, Value: p.CSRF, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
	return s.render(w, status, "index.html", p)
}

func (s *Server) uiIndex(w http.ResponseWriter, r *http.Request) error {
	if err := s.uiGuard(r); err != nil {
		return err
	}
	return s.renderIndex(w, http.StatusOK, page{})
}

// uiApply takes the form: the CSRF token must match its cookie; the config is validated
// at once (errors are shown on the form), then applied as a first-boot job.
func (s *Server) uiApply(w http.ResponseWriter, r *http.Request) error {
	if err := s.uiGuard(r); err != nil {
		return err
	}
	release, err := s.uploadSlot(r)
	if err != nil {
		return err
	}
	defer release()
	r.Body = http.MaxBytesReader(w, r.Body, s.o.MaxBody+1<<20)
	if err := r.ParseMultipartForm(1 << 20); err != nil { // past 1 MiB the file goes to disk
		return errf(wire.ErrInvalid, "expected a multipart form", err)
	}
	token, err := formToken(r)
	if err != nil {
		return err
	}
	var body []byte
	if f, _, err := r.FormFile("file"); err == nil {
		body, err = io.ReadAll(io.LimitReader(f, s.o.MaxBody+1))
		f.Close()
		if err != nil {
			return err
		}
	}
	text := r.FormValue("text")
	if len(body) == 0 {
		body = []byte(text)
	}
	if int64(len(body)) > s.o.MaxBody {
		return errf(wire.ErrTooLarge, "upload over the limit", nil)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return s.renderIndex(w, http.StatusBadRequest, page{Errors: []string{"choose a file or paste a config.toml"}})
	}
	if v := s.o.Service.Validate(r.Context(), bytes.NewReader(body)); !v.OK {
		var msgs []string
		for _, e := range v.Errors {
			msgs = append(msgs, e.Error())
		}
		return s.renderIndex(w, http.StatusBadRequest, page{Errors: msgs, Text: text})
	}
	id, err := s.submit("apply", "boot-ui", "boot-ui", provision.Input{Reader: bytes.NewReader(body), RequireUnprovisioned: true,
		Authorize: s.o.Service.FirstBootRecheck}, nil)
	if err != nil {
		return err
	}
	s.uiMu.Lock()
	s.uiJob, s.uiToken = id, token
	s.uiMu.Unlock()
	// The progress page is the response itself: after the job the UI routes are gone.
	return s.render(w, http.StatusAccepted, "progress.html", page{JobID: id, CSRF: token})
}

// formToken is the parsed form's CSRF token, which must match its cookie (double submit).
func formToken(r *http.Request) (string, error) {
	cookie, err := r.Cookie(csrfCookie)
	token := r.FormValue("csrf")
	if err != nil || token == "" || subtle.ConstantTimeCompare([]byte(cookie.Value), []byte(token)) != 1 {
		return "", errf(wire.ErrForbidden, "form token missing or wrong; reload the page", nil)
	}
	return token, nil
}

// uiConfirm confirms the network change the Boot UI's own first-boot job awaits
// (activation.confirm = "operator"): the page still reaching the device is the proof.
// Only the browser that started the job may: its form token must match its cookie and be
// the one the job was started with.
func (s *Server) uiConfirm(w http.ResponseWriter, r *http.Request) error {
	if err := s.uiHostGuard(r); err != nil {
		return err
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4<<10)
	if err := r.ParseForm(); err != nil {
		return errf(wire.ErrInvalid, "expected a form", err)
	}
	token, err := formToken(r)
	if err != nil {
		return err
	}
	job := r.FormValue("job")
	s.uiMu.Lock()
	mine := s.uiToken != "" && subtle.ConstantTimeCompare([]byte(s.uiToken), []byte(token)) == 1 && job == s.uiJob
	s.uiMu.Unlock()
	if !mine {
		return errf(wire.ErrForbidden, "only the page that started this job may confirm it", nil)
	}
	if err := s.o.Service.ConfirmJob(job); err != nil {
		return errf(wire.ErrNotFound, err.Error(), err)
	}
	s.log.Info("network change confirmed from the Boot UI", "job_id", job)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

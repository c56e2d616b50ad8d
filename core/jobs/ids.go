package jobs

import (
	"regexp"

	"github.com/google/uuid"
)

// idRE is what a job id may look like: it names a file in the jobs dir.
var idRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidID reports whether id is a safe job id.
func ValidID(id string) bool { return idRE.MatchString(id) }

// NewID returns a UUIDv7 (RFC 9562): time-ordered, with 74 random bits, so job ids sort
// by submission and are unguessable.
func NewID() string { return uuid.Must(uuid.NewV7()).String() }

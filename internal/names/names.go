// Package names is the one rule for the names of things in lifeboat:
// nodes, sites, services, servers, volumes, agents, operators and policy
// files share Valid; point names and volume paths (SERVICE/VOLUME) share
// CheckLabel. Config files, certificates, frames on the wire and the block
// store all check with these, so a name one accepts the others accept too.
package names

import (
	"fmt"
	"strings"
)

// MaxLen is the longest name.
const MaxLen = 63

// Want says what a name must look like, for error messages.
const Want = "want 1 to 63 of a-z, 0-9, '_', '.', '-', starting with a letter or digit"

// Valid reports whether s is a name: 1 to 63 characters of a-z, 0-9, '_',
// '.', '-', the first a letter or digit.
func Valid(s string) bool {
	if len(s) == 0 || len(s) > MaxLen || !alnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !alnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

func alnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

// Check returns an error naming kind when s is not a valid name.
func Check(kind, s string) error {
	if !Valid(s) {
		return fmt.Errorf("%s name %q: %s", kind, s, Want)
	}
	return nil
}

// MaxLabelLen is the longest label.
const MaxLabelLen = 128

// CheckLabel checks a point name, group or volume path: 1 to 128 ASCII
// letters, digits, and '-', '_', '.', '/' (for SERVICE/VOLUME), not
// starting with '.' or '/' and without "..".
func CheckLabel(kind, s string) error {
	if s == "" || len(s) > MaxLabelLen {
		return fmt.Errorf("%s name %q: want 1 to %d characters", kind, s, MaxLabelLen)
	}
	if s[0] == '.' || s[0] == '/' || strings.Contains(s, "..") {
		return fmt.Errorf("%s name %q: must not start with '.' or '/' or contain '..'", kind, s)
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("-_./", c)) {
			return fmt.Errorf("%s name %q: character %q not allowed (letters, digits, - _ . /)", kind, s, c)
		}
	}
	return nil
}

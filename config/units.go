package config

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/lifeboat-dr/lifeboat/internal/units"
)

// The value types of config files live in internal/units, shared with the
// command line.
type (
	Size     = units.Size
	Rate     = units.Rate
	Duration = units.Duration
)

// Unlimited is the Rate that puts no limit on a link.
const Unlimited = units.Unlimited

// Parsers of the value types.
var (
	ParseSize     = units.ParseSize
	ParseRate     = units.ParseRate
	ParseDuration = units.ParseDuration
)

// errWant builds the "value: want ..." error for a bad value of any type.
func errWant(v any, want string) error {
	return errors.New(quote(v) + ": " + want)
}

// quote renders a TOML value for an error message, strings in quotes and
// cut short when long.
func quote(v any) string {
	var s string
	switch x := v.(type) {
	case string:
		if len(x) > 80 {
			x = x[:77] + "..."
		}
		return strconv.Quote(x)
	case []any:
		var parts []string
		for i, e := range x {
			if i == 4 {
				parts = append(parts, "...")
				break
			}
			if _, nested := e.([]any); nested {
				parts = append(parts, "[...]")
				continue
			}
			parts = append(parts, quote(e))
		}
		s = "[" + strings.Join(parts, ", ") + "]"
	case map[string]any:
		s = "{...}"
	case fmt.Stringer:
		s = x.String()
	default:
		s = fmt.Sprint(x)
	}
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

package jointoken

import (
	"errors"
	"strings"
	"testing"
)

const hash = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func TestParseNeverEchoesInput(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "abcdef.0123456789abcdef", "ks1.zz.abcdef.0123456789abcdef", "ks1." + hash + ".ABCDEF.0123456789abcdef"} {
		_, err := Parse(in)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = %v", in, err)
		}
		if in != "" && strings.Contains(err.Error(), in) {
			t.Errorf("error echoes the input")
		}
	}
}

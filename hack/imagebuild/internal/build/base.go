package build

import (
	"fmt"
	"io/fs"

	"github.com/kubesplit/kubesplit/hack/imagebuild/internal/catalog"
	"github.com/kubesplit/kubesplit/hack/imagebuild/internal/layer"
)

// staticBase is what a static Go binary needs around it to run as a
// non-root role: CA certificates for outgoing TLS, user and group names for
// the nonroot ids, a writable /tmp, and /var/lib/kubesplit owned by nonroot
// (Docker copies a directory's owner into a fresh named volume mounted on it).
func staticBase(caCerts string) []layer.Entry {
	n := catalog.NonRoot
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", n, n)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", n)
	return []layer.Entry{
		layer.Bytes("/etc/passwd", []byte(passwd), 0o644),
		layer.Bytes("/etc/group", []byte(group), 0o644),
		layer.File("/etc/ssl/certs/ca-certificates.crt", caCerts, 0o644),
		layer.Dir("/home/nonroot", 0o700, n, n),
		layer.Dir("/tmp", fs.ModeSticky|0o777, 0, 0),
		layer.Dir("/var/lib/kubesplit", 0o700, n, n),
	}
}

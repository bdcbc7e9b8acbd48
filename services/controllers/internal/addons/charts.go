package addons

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"embed"
	"encoding/base64"
	"fmt"
	"io/fs"
	"path"
	"strings"
	"time"
)

// The charts of bundled addons that are deployed as HelmCharts: kubesplit's
// own small charts, in this repository (charts/NAME).
//
//go:embed all:charts
var chartsFS embed.FS

// ChartArchive packs charts/NAME as a Helm chart archive (.tgz), the way
// `helm package` lays it out (every file under NAME/). It is written here
// rather than with Helm's packager so that the bytes depend on the files
// alone (no times, owners or file order): the HelmChart's chartContent, and
// so its applied hash, change only when the chart does, and a restart of
// the controllers never upgrades the release.
func ChartArchive(name string) ([]byte, error) {
	root := path.Join("charts", name)
	if _, err := fs.Stat(chartsFS, path.Join(root, "Chart.yaml")); err != nil {
		return nil, fmt.Errorf("no bundled chart %q", name)
	}
	var buf bytes.Buffer
	gz, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	tw := tar.NewWriter(gz)
	// fs.WalkDir visits in lexical order: the archive is the same every time
	err := fs.WalkDir(chartsFS, root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := chartsFS.ReadFile(p)
		if err != nil {
			return err
		}
		h := &tar.Header{Name: name + "/" + strings.TrimPrefix(p, root+"/"), Mode: 0o644, Size: int64(len(b)), Typeflag: tar.TypeReg,
			ModTime: time.Unix(0, 0), Format: tar.FormatUSTAR}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ChartContent is charts/NAME as a HelmChart's chartContent (base64 .tgz),
// what a bundled template names as {{.ChartContent "NAME"}}.
func (p BundledParams) ChartContent(name string) (string, error) {
	b, err := ChartArchive(name)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// ImageRef is the image a bundled template names as {{.ImageRef "NAME"}},
// split into what charts call image.repository and image.tag (the tag is
// empty for a reference by digest or without a tag: the repository is then
// the whole reference).
func (p BundledParams) ImageRef(name string) (ImageRef, error) {
	img, err := p.Image(name)
	if err != nil {
		return ImageRef{}, err
	}
	slash := strings.LastIndex(img, "/")
	if i := strings.LastIndex(img, ":"); i > slash && !strings.Contains(img, "@") {
		return ImageRef{Repository: img[:i], Tag: img[i+1:]}, nil
	}
	return ImageRef{Repository: img}, nil
}

// ImageRef is an image reference as a chart's values take it.
type ImageRef struct{ Repository, Tag string }

package build

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// PrintSizes writes a table of every image's compressed size (the gzip
// layers a registry stores and a pull transfers) and uncompressed size (the
// layers' tar streams, close to what `docker images` shows), per platform.
func PrintSizes(w io.Writer, imgs []Image) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "image\tplatform\tcompressed\tuncompressed\t")
	for _, img := range imgs {
		for _, p := range img.Platforms {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t\n", Repository(img.Name), p.Platform, mb(p.Compressed), mb(p.Uncompressed))
		}
	}
	tw.Flush()
}

func mb(n int64) string { return fmt.Sprintf("%.1f MB", float64(n)/1e6) }

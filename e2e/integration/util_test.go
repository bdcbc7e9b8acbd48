package integration

import (
	"strconv"
	"strings"
	"sync"
)

// lockedBuilder is a strings.Builder safe for a process writing while a test reads.
type lockedBuilder struct {
	mu sync.Mutex
	strings.Builder
}

func (b *lockedBuilder) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Builder.Write(p)
}

func (b *lockedBuilder) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Builder.String()
}

func itoa(i int) string { return strconv.Itoa(i) }

//go:build gopy_dep

package gobridge

// The code gopy generates imports gopyh; this import keeps gopy in go.mod
// across `go mod tidy`.
import _ "github.com/go-python/gopy/gopyh"

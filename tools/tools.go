//go:build tools

// Package tools pins the build-time code generators (gopy, goimports).
// gopy v0.4.10 pins golang.org/x/tools v0.16.0, which does not compile on
// current Go; the requirement below raises it to a version that does.
package tools

import (
	_ "github.com/go-python/gopy"
	_ "golang.org/x/tools/cmd/goimports"
)

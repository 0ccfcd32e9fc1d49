// Package fault classifies errors into the fixed vocabulary that crosses the
// Python bridge as "<code>: <message>".
package fault

import (
	"errors"
	"fmt"
)

// Code is one word of the bridge's error vocabulary; pyshim maps each to an
// exception class.
type Code string

const (
	Config    Code = "config"    // invalid user configuration
	NotFound  Code = "not_found" // a queue, task or object does not exist
	Transport Code = "transport" // SQS/S3 could not be reached or refused the call
	Payload   Code = "payload"   // a message or payload is malformed or unauthenticated
	Canceled  Code = "canceled"  // the operation was canceled
	Internal  Code = "internal"  // a bug, including recovered panics
)

// Error carries a Code alongside the wrapped cause.
type Error struct {
	Code Code
	Err  error
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// New returns an error with the given code and formatted message.
func New(code Code, format string, args ...any) error {
	return &Error{Code: code, Err: fmt.Errorf(format, args...)}
}

// Wrap attaches a code to err, keeping the chain for errors.Is/As.
func Wrap(code Code, err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	return &Error{Code: code, Err: fmt.Errorf(format+": %w", append(args, err)...)}
}

// CodeOf returns the code of the outermost classified error, or Internal.
func CodeOf(err error) Code {
	var fe *Error
	if errors.As(err, &fe) {
		return fe.Code
	}
	return Internal
}

// Encode renders err for the bridge: "<code>: <message>".
func Encode(err error) string {
	return fmt.Sprintf("%s: %s", CodeOf(err), err.Error())
}

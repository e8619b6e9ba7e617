package main

import (
	"errors"
	"flag"
	"io"
)

// parseFlags parses args with fl, which writes to stderr. A bad flag gives
// a one-line usageError (the flag package would print the whole usage
// after it); -h prints the usage and returns flag.ErrHelp.
func parseFlags(fl *flag.FlagSet, args []string, stderr io.Writer) error {
	usage := fl.Usage
	fl.Usage = func() {}
	fl.SetOutput(io.Discard)
	err := fl.Parse(args)
	fl.SetOutput(stderr)
	fl.Usage = usage
	switch {
	case err == nil:
		return nil
	case errors.Is(err, flag.ErrHelp):
		fl.Usage()
		return err
	}
	return usageError{err}
}

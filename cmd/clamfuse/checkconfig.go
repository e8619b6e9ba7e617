package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/clamfuse/clamfuse/config"
)

// cmdCheckConfig validates a config file and prints the effective config.
func cmdCheckConfig(args []string, stdout, stderr io.Writer) error {
	fl := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fl.SetOutput(stderr)
	path := fl.String("config", "", "config file to check")
	if err := parseFlags(fl, args, stderr); err != nil {
		return err
	}
	if *path == "" || fl.NArg() != 0 {
		return usageError{fmt.Errorf("check-config: --config FILE is required")}
	}
	cfg, err := config.Load(*path)
	if err != nil {
		return usageError{err}
	}
	fmt.Fprint(stdout, cfg.Encode())
	return nil
}

package main

import "github.com/spf13/cobra"

// clientCommands are the CLI commands that talk to a running Velo.
func clientCommands() []*cobra.Command {
	return nil
}

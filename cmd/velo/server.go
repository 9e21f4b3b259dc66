package main

import "github.com/spf13/cobra"

// serverCommands are the roles: up, deploymgr, worker, router, webui, migrate.
func serverCommands() []*cobra.Command {
	return nil
}

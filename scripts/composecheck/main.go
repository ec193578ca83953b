// Command composecheck loads a compose file with compose-go, the loader of Docker Compose v2,
// and prints the resolved project as JSON (or the loader's error, exit status 1), so that the
// tests can check docker/compose.yaml as Compose v2 reads it (tests/test_deploy_files.py).
//
//	composecheck COMPOSE_FILE ENV_FILE [PROFILE,...]
//
// Variables come from the process environment first, then ENV_FILE, as `docker compose
// --env-file` takes them; relative paths resolve against the compose file's folder.
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) < 3 || len(os.Args) > 4 {
		fmt.Fprintln(os.Stderr, "usage: composecheck COMPOSE_FILE ENV_FILE [PROFILE,...]")
		os.Exit(2)
	}
	var profiles []string
	if len(os.Args) == 4 && os.Args[3] != "" {
		profiles = strings.Split(os.Args[3], ",")
	}
	if err := run(os.Args[1], os.Args[2], profiles); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(file, envFile string, profiles []string) error {
	options, err := cli.NewProjectOptions([]string{file},
		cli.WithOsEnv,
		cli.WithEnvFiles(envFile),
		cli.WithDotEnv,
		cli.WithProfiles(profiles),
		cli.WithWorkingDirectory(filepath.Dir(file)),
	)
	if err != nil {
		return err
	}
	project, err := options.LoadProject(context.Background())
	if err != nil {
		return err
	}
	out, err := project.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}

// Package manifest reads velo.toml, the file that says how a component runs.
//
// It owns the manifest's syntax, its defaults, runtime inference from the
// component's files, and the bounds every value must respect. It parses
// strictly: an unknown key or a bad value is an error that names the key.
//
// It must not touch the network, the real filesystem (it reads an fs.FS the
// caller hands it), or run anything: the build command is only carried.
package manifest

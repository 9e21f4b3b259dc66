package wasm

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/tetratelabs/wazero"
)

// Why the runtime computes wazero's cache file names: wazero's disk
// compilation cache (wazero.NewCompilationCacheWithDir) keeps one file per
// compiled module and never removes any, so a worker that sees thousands of
// deployments fills its disk with code no one runs. wazero names each file
// sha256(moduleID ‖ "WAZEVO" ‖ cpuFeatures) under a directory named for its
// version, where moduleID = sha256(binary ‖ ensureTermination) (no function
// listeners here; ensureTermination is off for binaries with stop checks,
// stop.go) and cpuFeatures is a small bit set of this CPU's
// extensions. None of that is exported, so New learns the two unknowns by
// compiling a tiny probe module into a scratch cache and finding the
// cpuFeatures value and directory that produce the file wazero wrote. When
// that fails (a wazero upgrade changed the scheme) the runtime logs it and
// collects nothing: a stale cache entry wastes disk, a wrong deletion
// would only cost a recompile, but guessing is not worth either. A test
// pins the probe against the wazero in go.mod.

// probeModule is the smallest module with code: one function, (func).
var probeModule = []byte{
	0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version 1
	0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type section: () -> ()
	0x03, 0x02, 0x01, 0x00, // function section: one function of type 0
	0x0a, 0x04, 0x01, 0x02, 0x00, 0x0b, // code section: no locals, end
}

// diskCache names the files of one wazero disk compilation cache.
type diskCache struct {
	dir string // the version directory wazero writes files into
	cpu [8]byte
}

// probeDiskCache learns how the wazero in this binary names cache files
// under cacheDir (see above), compiling the probe in a scratch directory
// inside it.
func probeDiskCache(ctx context.Context, cacheDir string) (*diskCache, error) {
	scratch, err := os.MkdirTemp(cacheDir, ".probe-")
	if err != nil {
		return nil, fmt.Errorf("probe cache layout: %w", err)
	}
	defer os.RemoveAll(scratch)
	cache, err := wazero.NewCompilationCacheWithDir(scratch)
	if err != nil {
		return nil, fmt.Errorf("probe cache layout: %w", err)
	}
	defer cache.Close(ctx)
	r := wazero.NewRuntimeWithConfig(ctx, runtimeConfig(cache, runtimeKey{pages: 1}))
	defer r.Close(ctx)
	mod, err := r.CompileModule(ctx, probeModule)
	if err != nil {
		return nil, fmt.Errorf("probe cache layout: compile: %w", err)
	}
	_ = mod.Close(ctx)

	subs, err := os.ReadDir(scratch)
	if err != nil || len(subs) != 1 || !subs[0].IsDir() {
		return nil, errors.New("probe cache layout: wazero did not write one version directory")
	}
	files, err := os.ReadDir(filepath.Join(scratch, subs[0].Name()))
	if err != nil || len(files) != 1 {
		return nil, errors.New("probe cache layout: wazero did not write one cache file")
	}
	want := files[0].Name()
	d := &diskCache{dir: filepath.Join(cacheDir, subs[0].Name())}
	id := moduleID(probeModule, true)
	for cpu := range uint64(256) {
		binary.LittleEndian.PutUint64(d.cpu[:], cpu)
		if d.key(id) == want {
			return d, nil
		}
	}
	return nil, fmt.Errorf("probe cache layout: no known naming gives wazero's file %s", want)
}

// moduleID is wazero's ID of a module compiled with no function listeners,
// with ensureTermination (a runtime that closes modules on context done) or
// without.
func moduleID(bin []byte, ensureTermination bool) [32]byte {
	h := sha256.New()
	h.Write(bin)
	if ensureTermination {
		h.Write([]byte{1})
	} else {
		h.Write([]byte{0})
	}
	var id [32]byte
	h.Sum(id[:0])
	return id
}

// key is the file name wazero gives the module with id.
func (d *diskCache) key(id [32]byte) string {
	h := sha256.New()
	h.Write(id[:])
	h.Write([]byte("WAZEVO"))
	h.Write(d.cpu[:])
	return hex.EncodeToString(h.Sum(nil))
}

// path is where wazero keeps the compiled code of the module whose binary
// is bin, compiled with ensureTermination or not.
func (d *diskCache) path(bin []byte, ensureTermination bool) string {
	return filepath.Join(d.dir, d.key(moduleID(bin, ensureTermination)))
}

// sweepVersions removes the directories older wazero versions left in
// cacheDir: this wazero never reads them.
func (d *diskCache) sweepVersions(cacheDir string) error {
	entries, err := os.ReadDir(cacheDir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		name := e.Name()
		stale := strings.HasPrefix(name, "wazero-") && name != filepath.Base(d.dir)
		if stale || strings.HasPrefix(name, ".probe-") {
			if err := os.RemoveAll(filepath.Join(cacheDir, name)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

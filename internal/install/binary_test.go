package install

import (
	"context"
	"debug/elf"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/velo-run/velo/internal/testsupport"
)

// TestSelfOrBuiltSamePlatform: a host of this platform gets this
// executable; one of another, outside a source checkout, a message that
// says how to get one.
func TestSelfOrBuiltSamePlatform(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bins := SelfOrBuilt(t.TempDir(), "v-test")
	if got, origin, err := bins(context.Background(), runtime.GOOS, runtime.GOARCH); err != nil || got != exe || origin != "this executable" {
		t.Errorf("same platform: %s (%s), %v; want %s", got, origin, err, exe)
	}
	t.Chdir(t.TempDir())
	_, _, err = bins(context.Background(), "linux", otherArch())
	if err == nil || !strings.Contains(err.Error(), "source checkout") || !strings.Contains(err.Error(), "GOARCH="+otherArch()) {
		t.Errorf("other platform outside a checkout: %v, want it to say how to get a binary", err)
	}
}

// TestSelfOrBuiltCrossCompiles: from the source checkout (the test runs in
// it), a host of another architecture gets velo cross-compiled for it: a
// static ELF executable of that machine, which runs there — here under
// qemu's user-mode emulation — and says the version it was given.
func TestSelfOrBuiltCrossCompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles all of velo (a minute or more)")
	}
	arch := otherArch()
	qemu := map[string]string{"arm64": "qemu-aarch64-static", "amd64": "qemu-x86_64-static"}[arch]
	_, err := exec.LookPath(qemu)
	testsupport.Need(t, qemu+" (apt-get install qemu-user-static)", err)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	path, origin, err := SelfOrBuilt(t.TempDir(), "v-cross-test")(ctx, "linux", arch)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(origin, "cross-compiled from ") {
		t.Errorf("origin %q, want it cross-compiled", origin)
	}
	f, err := elf.Open(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	defer f.Close()
	want := map[string]elf.Machine{"arm64": elf.EM_AARCH64, "amd64": elf.EM_X86_64}[arch]
	if f.Machine != want || f.Class != elf.ELFCLASS64 {
		t.Errorf("%s: machine %v, class %v; want %v, 64-bit", path, f.Machine, f.Class, want)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has a program interpreter: want a static executable (CGO_ENABLED=0)", path)
		}
	}
	out, err := exec.CommandContext(ctx, qemu, path, "version").CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "v-cross-test" {
		t.Errorf("%s %s version: %q, %v; want v-cross-test", qemu, path, out, err)
	}
}

// otherArch is a 64-bit architecture that is not this one.
func otherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

package deploymgr

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/velo-run/velo/internal/archive"
	"github.com/velo-run/velo/internal/archive/archivetest"
	"github.com/velo-run/velo/internal/manifest"
)

// TestInputErrorWrapsCause: what Deploy refuses is an *InputError that
// still is its cause to errors.Is and errors.As (the archive's limit, the
// manifest's own error), not a flattened message.
func TestInputErrorWrapsCause(t *testing.T) {
	m, err := New(Config{PublicURL: "http://127.0.0.1:1", Limits: archive.Limits{Unpacked: 10}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	deploy := func(req DeployRequest) error {
		_, err := m.Deploy(context.Background(), req)
		return err
	}

	err = deploy(DeployRequest{Archive: bytes.NewReader(archivetest.TarGz(t, map[string]string{"big.wasm": "more than ten bytes"}))})
	var ie *InputError
	var ae *archive.Error
	if !errors.As(err, &ie) || !ie.TooLarge || !errors.Is(err, archive.ErrTooLarge) || !errors.As(err, &ae) {
		t.Errorf("archive over the limit: %v (%T), want an InputError wrapping archive.ErrTooLarge", err, err)
	}

	err = deploy(DeployRequest{Name: "Not_A_Label", Archive: bytes.NewReader(archivetest.TarGz(t, map[string]string{"a.wasm": "x"}))})
	want := manifest.ValidName("Not_A_Label")
	if !errors.As(err, &ie) || ie.TooLarge || want == nil || errors.Unwrap(ie.Err) == nil || errors.Unwrap(ie.Err).Error() != want.Error() {
		t.Errorf("bad component name: %v (%T), want an InputError wrapping manifest's %v", err, err, want)
	}
}

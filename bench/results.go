package main

import (
	"errors"
	"fmt"
	"os"
	"strings"
)

const resultsTitle = "# Velo benchmark results\n\n" +
	"Written by `go run ./bench` (see bench/README.md). Each section is replaced\n" +
	"in place when it is run again (`-only NAME`); the others are kept.\n"

func headerMarkers() (begin, end string) { return "<!-- header -->", "<!-- /header -->" }

func sectionMarkers(name string) (begin, end string) {
	return "<!-- section:" + name + " -->", "<!-- /section:" + name + " -->"
}

// writeResults updates the results file at path: the header block and the
// sections in bodies are replaced where they are, sections not yet in the
// file are added (in the order of order, a comma-separated list), and
// everything else is kept as it was.
func writeResults(path, header string, bodies map[string]string, order string) error {
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read results: %w", err)
	}
	doc := string(old)
	if doc == "" {
		doc = resultsTitle
	}
	hb, he := headerMarkers()
	if doc, err = replaceBlock(doc, hb, he, header); err != nil {
		return err
	}
	for name := range strings.SplitSeq(order, ",") {
		body, ok := bodies[name]
		if !ok {
			continue
		}
		b, e := sectionMarkers(name)
		if doc, err = replaceBlock(doc, b, e, body); err != nil {
			return err
		}
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(doc), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return os.Rename(tmp, path)
}

// replaceBlock puts body between the markers begin and end in doc,
// replacing what was there, or appends the delimited block when doc has
// none.
func replaceBlock(doc, begin, end, body string) (string, error) {
	block := begin + "\n" + strings.TrimSpace(body) + "\n" + end
	i := strings.Index(doc, begin)
	if i < 0 {
		return strings.TrimRight(doc, "\n") + "\n\n" + block + "\n", nil
	}
	j := strings.Index(doc[i:], end)
	if j < 0 {
		return "", fmt.Errorf("results file: %q has no matching %q", begin, end)
	}
	return doc[:i] + block + doc[i+j+len(end):], nil
}

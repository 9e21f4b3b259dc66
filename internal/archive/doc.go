// Package archive handles component archives: gzip'd tarballs that come from
// untrusted users (`velo deploy` uploads) and from GitHub commit tarballs.
//
// It owns every check an archive must pass before anything of it is stored
// or written: size and entry-count caps enforced while reading (so a gzip
// bomb is cut off, not inflated), entry names that stay inside the tree,
// symlinks whose targets resolve inside the tree, and no hard links, devices
// or fifos. A Tree that Read returns is validated, held in memory, immutable
// and safe for concurrent use; it is an fs.FS for the manifest package and
// writes itself back as a canonical .tar.gz, so identical trees give
// byte-identical archives (artifacts are addressed by their sha256).
//
// It must not touch the network, know about components or manifests, or
// write outside the directory it is asked to unpack into: Unpack validates
// the whole archive first, writes into a temporary sibling through os.Root,
// and renames it into place only when everything succeeded.
package archive

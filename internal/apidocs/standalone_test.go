package apidocs

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestDocsStandAlone checks that the README and docs/ cite no document
// outside the repository: the design specification termhub was built
// against (../shared/CONTRACT.md, "CONTRACT §n") is not part of it, so a
// reader must be sent to the repository's own pages instead.
func TestDocsStandAlone(t *testing.T) {
	files, err := filepath.Glob(repoPath(t, "docs/*.md"))
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, repoPath(t, "README.md"), repoPath(t, "sdk/js/README.md"))
	for _, f := range files {
		rel, _ := filepath.Rel(repoRoot(t), f)
		text := readRepoFile(t, filepath.ToSlash(rel))
		for _, bad := range []string{"../shared", "CONTRACT", "ARCHITECTURE.md"} {
			if i := strings.Index(text, bad); i >= 0 {
				line := strings.Count(text[:i], "\n") + 1
				t.Errorf("%s:%d cites %q, which is not in the repository", rel, line, bad)
			}
		}
	}
}

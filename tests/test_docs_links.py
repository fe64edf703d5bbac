"""Every relative link of the README and of docs/*.md leads somewhere: the
file exists, and a `#fragment` names a heading of the target markdown file
(GitHub's anchors: lower case, punctuation dropped, spaces to hyphens)."""

import collections
import os
import re
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(
    os.path.join("docs", name)
    for name in os.listdir(os.path.join(ROOT, "docs")) if name.endswith(".md"))

LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", flags=re.M)
FENCE = re.compile(r"^```.*?^```", flags=re.M | re.S)


def _text(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return FENCE.sub("", handle.read())


def github_anchor(heading):
    """The anchor GitHub gives a markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path):
    """Every heading anchor of the markdown file `path` (relative to ROOT),
    repeated headings numbered `-1`, `-2`, ... as GitHub does."""
    seen = collections.Counter()
    result = set()
    for heading in HEADING.findall(_text(path)):
        anchor = github_anchor(heading)
        result.add(anchor if not seen[anchor] else "%s-%d" % (anchor, seen[anchor]))
        seen[anchor] += 1
    return result


def relative_links(path):
    """(target path relative to ROOT, fragment or "") of each relative link."""
    for target in LINK.findall(_text(path)):
        if re.match(r"[a-z]+:", target):
            continue
        file_part, _, fragment = target.partition("#")
        resolved = (os.path.normpath(os.path.join(os.path.dirname(path), file_part))
                    if file_part else path)
        yield resolved, fragment


def broken_links(path):
    """The relative links of `path` whose file is missing, or whose fragment
    names no heading of the markdown file they point to."""
    broken = []
    for target, fragment in relative_links(path):
        if not os.path.exists(os.path.join(ROOT, target)):
            broken.append("%s (missing)" % target)
        elif fragment and target.endswith(".md") and fragment not in anchors(target):
            broken.append("%s#%s (no such heading)" % (target, fragment))
    return broken


def test_github_anchor_drops_punctuation_and_keeps_hyphens():
    assert github_anchor("Batch 256: K-FAC 4.2x faster than tuned SGD") == (
        "batch-256-k-fac-42x-faster-than-tuned-sgd")
    assert github_anchor("Watching the curvature: `KfacHook`, TensorBoard") == (
        "watching-the-curvature-kfachook-tensorboard")


def test_link_checker_finds_a_missing_file_and_a_missing_heading(tmp_path, monkeypatch):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# Title\n\n[ok](#title) [bad](#nothing) "
                               "[up](../b.md#b-part) [gone](c.md)\n")
    (tmp_path / "b.md").write_text("## B part\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", str(tmp_path))
    links = list(relative_links("docs/a.md"))
    assert links == [("docs/a.md", "title"), ("docs/a.md", "nothing"),
                     ("b.md", "b-part"), ("docs/c.md", "")]
    assert anchors("docs/a.md") == {"title"} and anchors("b.md") == {"b-part"}
    assert broken_links("docs/a.md") == ["docs/a.md#nothing (no such heading)",
                                         "docs/c.md (missing)"]


@pytest.mark.parametrize("path", DOCS)
def test_relative_links_resolve(path):
    broken = broken_links(path)
    assert not broken, "%s links to %s" % (path, ", ".join(broken))

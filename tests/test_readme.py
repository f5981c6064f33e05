"""The docs a newcomer follows: the README's contents list every section and its links land on a heading; every
link between the repo's markdown files points to a file that exists."""
import os
import re

from conftest import ROOT

DOCS = ["README.md", "EXERCISES.md", "docs/PAPER.md"]


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
        return fh.read()


def test_the_contents_list_every_section_in_order():
    readme = read("README.md")
    contents = readme[readme.index("## Contents\n"):].split("\n\n")[1]
    listed = re.findall(r"^- \[(.+)\]\(#([^)]+)\)", contents, re.M)
    sections = [h for h in re.findall(r"^## (.+)$", readme, re.M) if h != "Contents"]
    assert [title for title, _ in listed] == sections, "refresh the README's contents: one line per ## section"
    assert all(anchor == slug(title) for title, anchor in listed), listed


def test_links_land_on_a_heading_or_a_file():
    for doc in DOCS:
        text = read(doc)
        headings = {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith("http"):
                continue
            path, _, anchor = target.partition("#")
            path = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
            assert os.path.exists(os.path.join(ROOT, path)), f"{doc}: link to {target}: no such file"
            if anchor:
                targets = headings if path == doc else {slug(h) for h in re.findall(r"^#+ (.+)$", read(path), re.M)}
                assert anchor in targets, f"{doc}: link to {target}: no such heading"

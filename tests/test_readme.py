"""The docs a newcomer follows: the README is short enough to read to the end, its contents list every
section, every link between the repo's markdown files lands on a file and heading that exist, and every file
a documented command names is there."""
import glob
import itertools
import os
import re

from conftest import ROOT

DOCS = ["README.md", "EXERCISES.md"] + sorted(f"docs/{os.path.basename(p)}"
                                               for p in glob.glob(f"{ROOT}/docs/*.md"))
README_MAX_LINES = 300  # nanoGPT's, nanochat's and gpt-fast's READMEs are ~230: the rest of ours is in docs/


def slug(heading):
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text):
    return {slug(h) for h in re.findall(r"^#+ (.+)$", text, re.M)}


def read(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as fh:
        return fh.read()


def test_the_readme_is_short_enough_to_read_to_the_end():
    n = read("README.md").count("\n")
    assert n <= README_MAX_LINES, f"README.md has {n} lines; move reference material to docs/"


def test_the_contents_list_every_section_in_order():
    readme = read("README.md")
    contents = readme[readme.index("## Contents\n"):].split("\n\n")[1]
    listed = re.findall(r"^- \[(.+)\]\(#([^)]+)\)", contents, re.M)
    sections = [h for h in re.findall(r"^## (.+)$", readme, re.M) if h != "Contents"]
    assert [title for title, _ in listed] == sections, "refresh the README's contents: a line per ## section"
    assert all(anchor == slug(title) for title, anchor in listed), listed


def test_links_land_on_a_heading_or_a_file():
    assert "docs/PAPER.md" in DOCS and len(DOCS) > 3
    for doc in DOCS:
        text = read(doc)
        headings = anchors(text)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if target.startswith("http"):
                continue
            path, _, anchor = target.partition("#")
            path = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
            assert os.path.exists(os.path.join(ROOT, path)), f"{doc}: link to {target}: no such file"
            if anchor:
                targets = headings if path == doc else anchors(read(path))
                assert anchor in targets, f"{doc}: link to {target}: no such heading"


def commands(text):
    """The commands a doc shows: its ```bash blocks' lines, and inline `python ...` / `torchrun ...` spans."""
    for block in re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S):
        yield from block.splitlines()
    yield from re.findall(r"`((?:python|torchrun) [^`]+)`", text)


def expand(word):
    """Shell brace expansion: config/{a,b}.py -> config/a.py, config/b.py."""
    parts = re.split(r"\{([^{}]*)\}", word)
    options = [p.split(",") if i % 2 else [p] for i, p in enumerate(parts)]
    return ["".join(choice) for choice in itertools.product(*options)]


def test_every_file_a_documented_command_names_exists():
    """A command copied from the docs, run from the repo root, finds its scripts, configs and tests."""
    missing = []
    for doc in DOCS:
        for line in commands(read(doc)):
            for word in line.split(" #")[0].split():
                word = word.split("=", 1)[-1]  # --base=config/x.py
                if not word.endswith(".py") or "<" in word or "*" in word or word.startswith(("../", "/")):
                    continue
                missing += [f"{doc}: {line.strip()}: {path}" for path in expand(word)
                            if not os.path.exists(os.path.join(ROOT, path))]
    assert not missing, "\n".join(missing)


def test_no_text_names_the_projects_tracker():
    """Code, docs and tests speak to a reader, not to the project's tracker: no numbered issue of ours (another
    project's, like TRL's, may be cited) and no work-period wording in prose (comments, strings, markdown)."""
    import glob
    import io
    import tokenize
    bad = re.compile(r"(?<!TRL )\bissues? \d+|\b" + "sess" + r"ions?\b", re.I)  # spelled so it can't match itself
    found = []
    for path in glob.glob(os.path.join(ROOT, "**", "*.md"), recursive=True):
        found += [f"{path}: {m[0]}" for m in bad.finditer(read(os.path.relpath(path, ROOT)))]
    for path in glob.glob(os.path.join(ROOT, "**", "*.py"), recursive=True) + [os.path.join(ROOT, ".ci", "run")]:
        text = read(os.path.relpath(path, ROOT))
        if path.endswith(".py"):  # prose only: pytest's hook arguments are names in code
            text = "\n".join(t.string for t in tokenize.generate_tokens(io.StringIO(text).readline)
                             if t.type in (tokenize.COMMENT, tokenize.STRING))
        found += [f"{path}: {m[0]}" for m in bad.finditer(text)]
    assert not found, found

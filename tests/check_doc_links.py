#!/usr/bin/env python3
"""Checks the relative links between the repository's Markdown files.

Every `[text](target)` outside code must name a file or directory that
exists, and a `#anchor` into a Markdown file must be one of its headings,
slugged as GitHub slugs them. Links to other sites are not followed.

  python3 tests/check_doc_links.py     # prints "doc links: N checked, N broken"
"""

import re
import sys
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parent.parent
SKIP_DIRS = {".git", "target", "node_modules"}
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
CODE_SPAN = re.compile(r"`+[^`]*`+")


def markdown_files():
    for path in sorted(REPO.rglob("*.md")):
        if not SKIP_DIRS.intersection(path.relative_to(REPO).parts):
            yield path


def lines_outside_code(path):
    """(line number, text) of the lines outside fenced code blocks."""
    fence = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.lstrip()
        if fence:
            if stripped.startswith(fence):
                fence = None
        elif stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        else:
            yield number, line


def links(path):
    """(line number, target) of every link outside code; link text may wrap."""
    lines = dict(lines_outside_code(path))
    count = len(path.read_text(encoding="utf-8").splitlines())
    prose = "\n".join(CODE_SPAN.sub("", lines.get(n, "")) for n in range(1, count + 1))
    for match in LINK.finditer(prose):
        yield prose.count("\n", 0, match.start()) + 1, match.group(1)


def slug(heading):
    # GitHub: inline markup goes, then lower case, then everything but
    # letters, digits, '-', '_' and spaces goes, then spaces become '-'.
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "").lower()
    text = "".join(c for c in text if c.isalnum() or c in "-_ ")
    return text.replace(" ", "-")


def anchors(path):
    seen = {}
    found = set()
    for _, line in lines_outside_code(path):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
    return found


def problem(source, target):
    """Why the link `target` in `source` is broken, or None."""
    if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):
        return None  # another site, or mailto:
    path_part, _, anchor = target.partition("#")
    dest = (source.parent / unquote(path_part)).resolve() if path_part else source
    if not dest.exists():
        return "no such file"
    if REPO not in dest.parents and dest != REPO:
        return "outside the repository"
    if anchor and dest.suffix == ".md" and unquote(anchor) not in anchors(dest):
        return f"no heading #{anchor} in {dest.relative_to(REPO)}"
    return None


def main():
    checked = broken = 0
    for path in markdown_files():
        for number, target in links(path):
            checked += 1
            why = problem(path, target)
            if why:
                broken += 1
                print(f"{path.relative_to(REPO)}:{number}: ({target}): {why}")
    print(f"doc links: {checked} checked, {broken} broken")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())

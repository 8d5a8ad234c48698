"""The docs stay true to the repository: the README and the task pages in docs/ name only
modules that run, make targets that exist and files that are there, and the README stays short.

Pages are discovered with glob, so a new docs/*.md page is checked (and must be linked from the
README) without editing this file. Pure text checks: nothing is imported or run.
"""

import re
import shlex
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
MAX_README_LINES = 200

FENCE = re.compile(r"^ {0,3}(```|~~~)[^\n]*\n.*?^ {0,3}\1[ \t]*$", re.S | re.M)
INLINE_CODE = re.compile(r"(`+)(.+?)(?<!`)\1(?!`)", re.S)
MODULE_RUN = re.compile(r"\bpython[\d.]*\s+-m\s+pconv_jax\.([A-Za-z_]\w*)")
MAKE_CALL = re.compile(r"(?<![\w$./-])make(?=[ \t]|$)([^\n]*)", re.M)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
SCHEME = re.compile(r"^[A-Za-z][\w+.-]*:")

# make's options that take the next word as their argument.
MAKE_OPTIONS_WITH_ARG = {"-C", "-f", "-I", "-o", "-W", "-j", "-l", "--directory", "--file",
                         "--makefile", "--include-dir", "--old-file", "--what-if"}
SHELL_OPERATORS = {";", "&&", "||", "|", "&", "(", ")", ";;"}


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def code_snippets(text: str) -> list[str]:
    """The fenced code blocks and inline code spans of a Markdown text."""
    blocks = [m.group(0) for m in FENCE.finditer(text)]
    prose = FENCE.sub("\n", text)
    return blocks + [m.group(2) for m in INLINE_CODE.finditer(prose)]


def without_code(text: str) -> str:
    """The text with code blocks and code spans blanked, so code is never read as a link."""
    return INLINE_CODE.sub("code", FENCE.sub("\n", text))


def make_goals(arguments: str) -> list[str]:
    """The targets of one `make ...` command line: the words that are not options, option
    arguments or VAR=value assignments, up to a shell operator or a comment."""
    lexer = shlex.shlex(arguments, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        words = list(lexer)
    except ValueError:  # an unbalanced quote: read the words before it
        words = arguments.split()
    goals, skip_next = [], False
    for word in words:
        if skip_next:
            skip_next = False
        elif word in SHELL_OPERATORS or word.startswith("#"):
            break
        elif word in MAKE_OPTIONS_WITH_ARG:
            skip_next = True
        elif word.startswith("-") or re.match(r"^[A-Za-z_][\w.]*[?:+]?=", word):
            continue
        else:
            goals.append(word)
    return goals


def makefile_targets() -> set[str]:
    """Target names of the Makefile: rule heads (`name:`, `a b:`) and `.PHONY:` lists;
    recipe lines, comments, continuation lines and variable assignments are not rules."""
    targets, continued = set(), False
    for line in (ROOT / "Makefile").read_text().splitlines():
        was_continued, continued = continued, line.endswith("\\")
        if was_continued or not line.strip() or line[0] in "\t #":
            continue
        rule = re.match(r"^([^:=#]+?)\s*::?(?!=)(.*)$", line)
        if not rule:
            continue
        heads, rest = rule.group(1).split(), rule.group(2).split("#")[0]
        names = rest.split() if heads == [".PHONY"] else heads
        targets.update(n for n in names if "$" not in n and "%" not in n and n[0] != ".")
    return targets


def links(path: Path) -> list[str]:
    """Every link target (inline, image or reference-style) of a Markdown page, outside code."""
    text = without_code(path.read_text())
    return LINK.findall(text) + REFERENCE_LINK.findall(text)


def local_target(page: Path, target: str) -> Path | None:
    """The file a relative link points to, or None for a URL or an anchor within the page."""
    if SCHEME.match(target) or target.startswith(("#", "//")):
        return None
    path = unquote(target.split("#", 1)[0].split("?", 1)[0])
    return (page.parent / path).resolve()


def test_pages_are_found():
    """The README exists and docs/ holds task pages, so the checks below are not vacuous."""
    assert README.is_file()
    assert DOCS, "docs/ holds no *.md page"


def test_python_m_names_a_runnable_module():
    """Every `python -m pconv_jax.X` in README.md and docs/*.md names src/pconv_jax/X.py, and
    that file has a `main` function or an `if __name__ == "__main__":` block."""
    problems, seen = [], set()
    for page in PAGES:
        for name in MODULE_RUN.findall(page.read_text()):
            seen.add(name)
            module = ROOT / "src" / "pconv_jax" / f"{name}.py"
            if not module.is_file():
                problems.append(f"{rel(page)}: python -m pconv_jax.{name}: no {rel(module)}")
                continue
            source = module.read_text()
            if not re.search(r"^def main\(|^if __name__ == [\"']__main__[\"']:", source, re.M):
                problems.append(f"{rel(page)}: python -m pconv_jax.{name}: {rel(module)} has "
                                "no main() and no __main__ block")
    assert "train" in seen, "the README's `python -m pconv_jax.train` was not found"
    assert not problems, "\n".join(problems)


def test_make_targets_exist():
    """Every `make TARGET` in the code of README.md and docs/*.md is a target of the Makefile
    (options such as `-C DIR` and VAR=value assignments are skipped; every goal is checked)."""
    targets = makefile_targets()
    assert {"demo", "test", "install"} <= targets, f"Makefile parsed as {sorted(targets)}"
    problems, seen = [], set()
    for page in PAGES:
        for snippet in code_snippets(page.read_text()):
            for call in MAKE_CALL.finditer(snippet):
                for goal in make_goals(call.group(1)):
                    seen.add(goal)
                    if goal not in targets:
                        problems.append(f"{rel(page)}: `make{call.group(1)}`: no target "
                                        f"{goal!r} in the Makefile")
    assert {"demo", "test"} <= seen, "the README's `make demo` / `make test` were not found"
    assert not problems, "\n".join(problems)


def test_relative_links_resolve_and_readme_links_every_page():
    """Every relative link in README.md and docs/*.md points to a file or folder that exists,
    and README.md links every docs/*.md page."""
    problems = []
    for page in PAGES:
        for target in links(page):
            path = local_target(page, target)
            if path is not None and not path.exists():
                problems.append(f"{rel(page)}: link {target!r}: no such file")
    linked = {local_target(README, t) for t in links(README)}
    problems += [f"README.md does not link {rel(doc)}" for doc in DOCS
                 if doc.resolve() not in linked]
    assert not problems, "\n".join(problems)


def test_every_page_links_back_to_readme():
    """Every docs/*.md page links back to README.md."""
    problems = [f"{rel(doc)} has no link to README.md" for doc in DOCS
                if README.resolve() not in {local_target(doc, t) for t in links(doc)}]
    assert not problems, "\n".join(problems)


def test_readme_is_short():
    """README.md has at most 200 lines: the rest belongs in docs/."""
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, f"README.md has {lines} lines (at most {MAX_README_LINES})"


def test_readme_starts_with_make_demo_and_make_test():
    """The first code block of README.md, the first commands a reader sees, is `make demo`
    then `make test`."""
    first_block = FENCE.search(README.read_text())
    assert first_block, "README.md has no code block"
    commands = [line.split("#")[0].strip() for line in first_block.group(0).splitlines()[1:-1]]
    assert [c for c in commands if c][:2] == ["make demo", "make test"], commands

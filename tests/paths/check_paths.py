#!/usr/bin/env python3
"""check_paths.py - every repository path named in a comment or a Markdown
file exists.

Usage: check_paths.py [ROOT]   (ROOT defaults to the repository holding
this script)
       check_paths.py --self-test  (runs the check on a small made-up tree
                                    and fails unless it finds exactly the
                                    stale references planted there)

Looks at the comments of the C, C++, shell, Python and CMake files under
src/, include/, tests/, examples/, cmake/, lib/ and .ci/, of the top-level
CMakeLists.txt, and at the whole text of every *.md file.  Anything there
that reads as a path from the top of the repository (src/..., include/...,
tests/..., examples/..., lib/..., cmake/..., docs/...) must name a file or
folder that exists.  A path written as a pattern (test_<name>.c,
fuzz_cli_*, {a,b}) must match at least one.  In the comments of code, a
bare C file name ("see loader.c") must also be the name of a file in the
repository (or a system header under /usr/include).  Prints each missing
path with the file and line that names it, and exits 1 if there is any.
"""
import fnmatch
import os
import re
import sys

TOPS = ("src", "include", "tests", "examples", "lib", "cmake", "docs")
SCAN_DIRS = ("src", "include", "tests", "examples", "cmake", "lib", ".ci")
C_EXT = (".c", ".h", ".cc", ".cpp", ".hpp", ".in")
HASH_EXT = (".sh", ".py", ".cmake", ".txt", ".supp")

# A path starts at a word boundary that is not itself inside a longer path
# (so /usr/lib/x or build/src/y do not count) and runs over path characters.
PATH_RE = re.compile(r"(?<![\w./\-$}])((?:%s)/[\w.\-/*<>{},]*)" % "|".join(TOPS))
# A C file name on its own, not part of a path or a pattern.
BARE_RE = re.compile(r"(?<![\w./\-$}<*])([A-Za-z_][\w\-]*\.[ch])\b(?![\w/\-*<])")


def c_comments(text):
    """(line, comment text) for each /* */ and // comment, skipping strings."""
    out = []
    i, n, line = 0, len(text), 1
    while i < n:
        ch = text[i]
        if ch == "\n":
            line += 1
            i += 1
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append((line, text[i:j]))
            line += text.count("\n", i, j)
            i = j
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append((line, text[i:j]))
            i = j
        elif ch in "\"'":
            j = i + 1
            while j < n and text[j] != ch and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            i = j + 1
        else:
            i += 1
    return out


def hash_comments(text):
    """(line, comment text) for each # comment (after the first # of a line
    that starts it or follows a space), skipping #! and #include-like C
    preprocessor lines."""
    out = []
    for k, l in enumerate(text.split("\n"), 1):
        m = re.search(r"(?:^|\s)#(?!!)(.*)$", l)
        if m:
            out.append((k, m.group(1)))
    return out


def split_lines(first_line, text):
    for k, l in enumerate(text.split("\n")):
        yield first_line + k, l


def candidates(root):
    """(file, line, text) to look for paths in."""
    files = []
    for d in SCAN_DIRS:
        for base, dirs, names in os.walk(os.path.join(root, d)):
            dirs[:] = [x for x in dirs if not x.startswith("build")]
            files += [os.path.join(base, x) for x in names]
    files.append(os.path.join(root, "CMakeLists.txt"))
    for base, dirs, names in os.walk(root):
        dirs[:] = [x for x in dirs if x != ".git" and not x.startswith("build")]
        files += [os.path.join(base, x) for x in names if x.endswith(".md")]
    for f in sorted(set(files)):
        rel = os.path.relpath(f, root)
        try:
            with open(f, encoding="utf-8") as fp:
                text = fp.read()
        except (UnicodeDecodeError, OSError):
            continue
        code = not f.endswith(".md")
        if f.endswith(".md"):
            chunks = [(1, text)]
        elif f.endswith(C_EXT):
            chunks = c_comments(text)
        elif f.endswith(HASH_EXT) or os.path.basename(f) in ("run", "CMakeLists.txt"):
            chunks = hash_comments(text)
        else:
            continue
        for first, chunk in chunks:
            for line, l in split_lines(first, chunk):
                yield rel, line, l, code


def exists(root, path):
    path = path.rstrip(".,:;)'\"`")
    while path.endswith((".", ",")):
        path = path[:-1]
    if not re.search(r"[*<{]", path):
        return path, os.path.exists(os.path.join(root, path))
    # A pattern: <name> and * stand for any text, {a,b} for either.
    alts = [path]
    while any("{" in a for a in alts):
        nxt = []
        for a in alts:
            m = re.search(r"\{([^{}]*)\}", a)
            if not m:
                nxt.append(a.replace("{", ""))
                continue
            for opt in m.group(1).split(","):
                nxt.append(a[: m.start()] + opt + a[m.end():])
        alts = nxt
    for a in alts:
        pat = re.sub(r"<[^<>/]*>", "*", a).rstrip("/")
        parts = pat.split("/")
        cur = [root]
        for p in parts:
            nxt = []
            for c in cur:
                if not os.path.isdir(c):
                    continue
                for e in os.listdir(c):
                    if fnmatch.fnmatchcase(e, p):
                        nxt.append(os.path.join(c, e))
            cur = nxt
        if cur:
            return path, True
    return path, False


def check(root):
    """The missing paths under root, as (file, line, path)."""
    names = set()
    for base, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x != ".git" and not x.startswith("build")]
        names.update(files)
    missing = []
    for rel, line, text, code in candidates(root):
        for m in PATH_RE.finditer(text):
            path, ok = exists(root, m.group(1))
            if not ok:
                missing.append((rel, line, path))
        if not code:
            continue
        for m in BARE_RE.finditer(text):
            name = m.group(1)
            if name not in names and not os.path.exists(os.path.join("/usr/include", name)):
                missing.append((rel, line, name))
    return missing


SELF_TEST_TREE = {
    "src/a/real.c": "/* real.c; see src/a/real.h and src/a/gone.c */\n"
                    "const char *s = \"src/a/not_a_comment.c\";\n",
    "src/a/real.h": "// moved to other.c, or engine.c?\n#include <stdio.h>\n",
    "src/a/other.c": "",
    "tests/unit/test_x.c": "/* tests/unit/test_<name>.c, tests/unit/test_z*.c */\n",
    "tests/CMakeLists.txt": "# tests/unit/ and cmake/nothing.cmake\nset(X src/no.c)\n",
    "README.md": "Read `docs/guide.md` and src/a/real.c, not /usr/lib/x.\n",
}
SELF_TEST_WANT = [
    ("README.md", 1, "docs/guide.md"),
    ("src/a/real.c", 1, "src/a/gone.c"),
    ("src/a/real.h", 1, "engine.c"),
    ("tests/CMakeLists.txt", 1, "cmake/nothing.cmake"),
    ("tests/unit/test_x.c", 1, "tests/unit/test_z*.c"),
]


def self_test():
    import tempfile
    with tempfile.TemporaryDirectory() as root:
        for rel, text in SELF_TEST_TREE.items():
            os.makedirs(os.path.dirname(os.path.join(root, rel)), exist_ok=True)
            with open(os.path.join(root, rel), "w", encoding="utf-8") as fp:
                fp.write(text)
        got = sorted(check(root))
    if got != SELF_TEST_WANT:
        print("check_paths --self-test: found %r, expected %r" % (got, SELF_TEST_WANT))
        return 1
    print("check_paths --self-test: the planted stale references, and only those, were found")
    return 0


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(
        os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    missing = check(root)
    for rel, line, path in missing:
        print("%s:%d: names %s, which does not exist" % (rel, line, path))
    if missing:
        print("check_paths: %d missing path(s)" % len(missing))
        return 1
    print("check_paths: every path named in comments and Markdown exists")
    return 0


if __name__ == "__main__":
    sys.exit(main())

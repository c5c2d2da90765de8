#!/bin/sh
# check_exports.sh - the binary contract of the built library.
#
#   check_exports.sh LIBDISTILL_SO [SONAME [INCLUDE_DIR [LIBDISTILL_A]]]
#
# Checks that
#   - libdistill.so's SONAME is SONAME (default libdistill.so.0);
#   - every symbol it exports starts with distill_ (the version node, e.g.
#     DISTILL_0, is not a symbol and is skipped) and carries a version;
#   - with INCLUDE_DIR: every function declared DISTILL_API in the public
#     headers is exported, and every exported symbol is declared there;
#   - with LIBDISTILL_A: every global symbol defined in the static archive
#     starts with distill_ too.
# Exits 1 listing every violation.
set -eu
export LC_ALL=C

lib=${1:?usage: check_exports.sh LIBDISTILL_SO [SONAME [INCLUDE_DIR [LIBDISTILL_A]]]}
want_soname=${2:-libdistill.so.0}
incdir=${3:-}
archive=${4:-}

fail=0
err() {
    echo "FAIL: $*" >&2
    fail=1
}

[ -f "$lib" ] || { echo "FAIL: $lib: no such file" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# --- SONAME
soname=$(readelf -d "$lib" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
if [ "$soname" = "$want_soname" ]; then
    echo "ok: SONAME $soname"
else
    err "SONAME is '${soname:-none}', expected '$want_soname'"
fi

# --- exported symbols: name@@VERSION or name@VERSION; 'A' entries are
# version nodes.
nm -D --defined-only "$lib" | awk '$2 != "A" { print $3 }' | sort -u > "$tmp/exports.raw"
sed 's/@.*//' "$tmp/exports.raw" | sort -u > "$tmp/exports"
n=$(wc -l < "$tmp/exports")
if [ "$n" -eq 0 ]; then
    err "$lib exports no symbols"
fi
bad=$(grep -v '^distill_' "$tmp/exports" || true)
if [ -n "$bad" ]; then
    err "exported symbols without the distill_ prefix:"
    echo "$bad" | sed 's/^/    /' >&2
fi
unversioned=$(grep -v '@' "$tmp/exports.raw" || true)
if [ -n "$unversioned" ]; then
    err "exported symbols without a version node (is lib/libdistill.vers applied?):"
    echo "$unversioned" | sed 's/^/    /' >&2
fi
echo "ok: $n exported symbols checked"

# --- exports versus the public headers
if [ -n "$incdir" ]; then
    # Every DISTILL_API declaration names its function on the same line.
    find "$incdir" -name '*.h' -exec grep -h 'DISTILL_API' {} + |
        grep -v '#' |
        sed -n 's/.*\b\(distill_[A-Za-z0-9_]*\)[[:space:]]*(.*/\1/p' |
        sort -u > "$tmp/declared"
    missing=$(comm -23 "$tmp/declared" "$tmp/exports")
    if [ -n "$missing" ]; then
        err "declared DISTILL_API in $incdir but not exported (not implemented?):"
        echo "$missing" | sed 's/^/    /' >&2
    fi
    undeclared=$(comm -13 "$tmp/declared" "$tmp/exports")
    if [ -n "$undeclared" ]; then
        err "exported but not declared DISTILL_API in any public header:"
        echo "$undeclared" | sed 's/^/    /' >&2
    fi
    echo "ok: $(wc -l < "$tmp/declared") declared functions compared with the exports"
fi

# --- the static archive
if [ -n "$archive" ]; then
    nm -g --defined-only "$archive" 2>/dev/null | awk 'NF >= 3 { print $3 }' | sort -u > "$tmp/static"
    bad=$(grep -v '^distill_' "$tmp/static" || true)
    if [ -n "$bad" ]; then
        err "global symbols in $archive without the distill_ prefix:"
        echo "$bad" | sed 's/^/    /' >&2
    fi
    echo "ok: $(wc -l < "$tmp/static") global symbols in the static archive checked"
fi

exit $fail

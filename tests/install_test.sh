#!/usr/bin/env bash
# Installs the build tree into a temporary prefix and builds two third-party
# programs against it, as a user would, with no path but the prefix: a C
# program through pkg-config (shared and static), and a C++ program through
# find_package(strata). Each backs up a sample image and restores it
# byte-identically. Usage: install_test.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1 src=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=$work/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null
libdir=$(ls -d "$prefix"/lib*/ | head -1)
export PKG_CONFIG_PATH=$libdir/pkgconfig
test -f "$prefix/include/strata/strata.h"
test -f "$prefix/bin/strata" && test -f "$prefix/bin/extent-dump"
ls "$libdir"/libstrata.so.* >/dev/null
# The installed strata finds its live-VM helper (libexec) wherever the prefix
# is: a refused NBD connection, not a missing helper.
"$prefix/bin/strata" init "$work/r" >/dev/null
out=$("$prefix/bin/strata" backup --repo "$work/r" --nbd "nbd+unix:///?socket=$work/none.sock" --full 2>&1) && {
  echo "backup from a missing NBD socket succeeded" >&2; exit 1; }
if grep -q "live-VM helper" <<<"$out" || ! grep -q "none.sock" <<<"$out"; then
  echo "installed strata cannot run strata-live: $out" >&2; exit 1
fi
# ... and its mount helper: the usage error comes from strata-mount itself.
out=$("$prefix/bin/strata" mount 2>&1) && { echo "strata mount without arguments succeeded" >&2; exit 1; }
if ! grep -q "expected --repo REPO DIR" <<<"$out"; then
  echo "installed strata cannot run strata-mount: $out" >&2; exit 1
fi
# (Never `cmd | grep -q` under pipefail: grep stops at the first match, the
# writer dies of SIGPIPE, and the pipeline fails whatever grep found.)
if grep -q libfuse3 <<<"$(ldd "$prefix/bin/strata")"; then echo "strata links libfuse3" >&2; exit 1; fi
# The nbdkit plugin (strata serve) and filter are installed where strata
# serve looks for the plugin.
test -f "$libdir/strata/nbdkit-strata-plugin.so" && test -f "$libdir/strata/nbdkit-strata-filter.so"
# The commands that need no VM do not load libvirt or libnbd.
if grep -qE "libvirt|libnbd" <<<"$(ldd "$prefix/bin/strata")"; then echo "strata links libvirt or libnbd" >&2; exit 1; fi
# The SONAME carries the version.
grep -q "SONAME.*libstrata.so.$(pkg-config --modversion strata | cut -d. -f1,2)" <<<"$(objdump -p "$libdir"/libstrata.so)"

# Manuals: every installed page renders; the installed completion registers.
ls "$prefix"/share/man/man1/strata.1 "$prefix"/share/man/man1/strata-backup.1 "$prefix"/share/man/man1/extent-dump.1 >/dev/null
for page in "$prefix"/share/man/man1/*.1; do
  grep -q "^NAME" <<<"$(MANWIDTH=80 man -l "$page" 2>&1)" || { echo "man -l $page does not render" >&2; exit 1; }
done
PATH="$prefix/bin:$PATH" bash -c 'source "$1/share/bash-completion/completions/strata" && complete -p strata >/dev/null' \
  _ "$prefix" || { echo "installed completion does not register strata" >&2; exit 1; }

# C, shared.
cc -std=c11 -Wall -Werror "$src/tests/capi_test.c" $(pkg-config --cflags --libs strata) \
   -Wl,-rpath,"$libdir" -o "$work/capi_shared"
mkdir "$work/c1" && "$work/capi_shared" "$work/c1"
# C, static: libstrata.a and the system libraries pkg-config names for it.
cc -std=c11 -Wall -Werror "$src/tests/capi_test.c" $(pkg-config --cflags strata) "$libdir/libstrata.a" \
   $(pkg-config --static --libs strata | sed 's/-lstrata\b//') -o "$work/capi_static"
if grep -q libstrata <<<"$(ldd "$work/capi_static")"; then echo "static program links libstrata.so" >&2; exit 1; fi
mkdir "$work/c2" && "$work/capi_static" "$work/c2"

# C++, find_package.
cmake -S "$src/tests/install_consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_RPATH="$libdir" >/dev/null
cmake --build "$work/consumer" >/dev/null
mkdir "$work/cpp" && "$work/consumer/consumer" "$work/cpp"
echo "install test: passed"

#!/usr/bin/env bash
# Generates the man pages from the tools' own --help and --version output
# with help2man (Debian help2man): strata(1), strata-COMMAND(1) for every
# command 'strata --help' lists, and extent-dump(1). Run by the build
# (tools/CMakeLists.txt); usage: manpages.sh BINDIR OUTDIR VERSION
set -euo pipefail
bin=$1 out=$2 version=$3
mkdir -p "$out"
rm -f "$out"/*.1
common=(--no-info --version-string="$version" --source="strata $version")
help2man "${common[@]}" --name="dirty-block tracking and incremental backup of virtual disks" \
  --output="$out/strata.1" "$bin/strata"
help2man "${common[@]}" --name="print the extent map of an image, archive, tracker or bitmap" \
  --output="$out/extent-dump.1" "$bin/extent-dump"
# One page per command: the summary line of 'strata --help' is its NAME.
"$bin/strata" --help | awk '/^Commands:/ {on = 1; next} on && /^  [a-z]/ {print}' |
  while read -r cmd summary; do
    # help2man runs "PROGRAM --help"; a wrapper makes "strata CMD" one program.
    wrapper="$out/strata-$cmd"
    printf '#!/bin/sh\nexec "%s" %s "$@"\n' "$bin/strata" "$cmd" > "$wrapper"
    chmod +x "$wrapper"
    help2man "${common[@]}" --name="$summary" --output="$out/strata-$cmd.1" "$wrapper"
    rm -f "$wrapper"
  done

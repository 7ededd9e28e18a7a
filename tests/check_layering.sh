#!/usr/bin/env bash
# Fails when a lower layer includes a higher one
# (extents <- formats <- engine <- capi <- tools).
set -u
root=${1:-.}
cd "$root" || exit 2
bad=0
check() {  # DIR FORBIDDEN-PREFIX...
  local dir=$1; shift
  for p in "$@"; do
    hits=$(grep -rnE "#include \"$p/" "$dir" --include='*.h' --include='*.cc' 2>/dev/null)
    if [ -n "$hits" ]; then
      echo "layering violation: $dir includes $p/:"; echo "$hits"; bad=1
    fi
  done
}
check extents formats engine capi tools
check formats engine capi tools
check engine capi tools
check capi tools
if [ $bad -eq 0 ]; then echo "layering ok"; fi
exit $bad

#!/usr/bin/env bash
# Fails when a lower layer includes a higher one
# (extents <- formats <- engine <- capi <- tools). Public headers live in
# include/strata/; each belongs to the layer that implements it (the table
# below), and counts as that layer for this check, in both directions.
set -u
root=${1:-.}
cd "$root" || exit 2
bad=0

level_of_dir() {
  case $1 in
    extents) echo 0 ;; formats) echo 1 ;; engine) echo 2 ;; capi) echo 3 ;; tools) echo 4 ;; *) echo 9 ;;
  esac
}
level_of_header() {  # strata/NAME.h
  case $1 in
    strata/status.h|strata/units.h|strata/checksum.h|strata/id128.h|strata/extent_set.h) echo 0 ;;
    strata/image.h|strata/open_image.h|strata/file.h|strata/env.h|strata/qcow2_image.h|strata/nbd_image.h) echo 1 ;;
    strata/strata.h) echo 3 ;;
    strata/*) echo 2 ;;
  esac
}
names=(extents formats engine capi tools)

# A folder must not include a higher folder's private headers.
for ((i = 0; i < ${#names[@]}; ++i)); do
  for ((j = i + 1; j < ${#names[@]}; ++j)); do
    hits=$(grep -rnE "#include \"${names[j]}/" "${names[i]}" --include='*.h' --include='*.cc' 2>/dev/null)
    if [ -n "$hits" ]; then
      echo "layering violation: ${names[i]} includes ${names[j]}/:"; echo "$hits"; bad=1
    fi
  done
done

# Nor a public header of a higher layer; and public headers obey the same order.
check_public() {  # FILE LEVEL
  local file=$1 level=$2 inc l
  while read -r inc; do
    l=$(level_of_header "$inc")
    if [ -n "$l" ] && [ "$l" -gt "$level" ]; then
      echo "layering violation: $file (layer $level) includes $inc (layer $l)"; bad=1
    fi
  done < <(grep -oE '#include "strata/[a-z0-9_]+\.h"' "$file" | sed -E 's/#include "(.*)"/\1/')
}
for d in "${names[@]}"; do
  lvl=$(level_of_dir "$d")
  while IFS= read -r f; do check_public "$f" "$lvl"; done < <(find "$d" -name '*.h' -o -name '*.cc' 2>/dev/null)
done
for f in include/strata/*.h; do
  check_public "$f" "$(level_of_header "strata/$(basename "$f")")"
done

if [ $bad -eq 0 ]; then echo "layering ok"; fi
exit $bad

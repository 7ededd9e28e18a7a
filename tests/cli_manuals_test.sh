#!/usr/bin/env bash
# The manuals (issue 12): every generated man page renders with man -l, there
# is one per command 'strata --help' lists, and after sourcing the bash
# completion 'complete -p strata' is set and completing the first word lists
# the commands. usage: cli_manuals_test.sh BINDIR MANDIR COMPLETION
set -euo pipefail
bin=$1 man=$2 completion=$3
fail() { echo "FAIL: $*" >&2; exit 1; }
cmds=$("$bin/strata" --help | awk '/^Commands:/ {on = 1; next} on && /^  [a-z]/ {print $1}')
[ -n "$cmds" ] || fail "strata --help lists no commands"
for page in strata extent-dump $(printf 'strata-%s ' $cmds); do
  f="$man/$page.1"
  [ -s "$f" ] || fail "$f missing"
  text=$(MANWIDTH=80 man -l "$f" 2>&1) || fail "man -l $f: $text"
  grep -q "^NAME" <<<"$text" || fail "$f has no NAME section: $(head -5 <<<"$text")"
  grep -qi "usage\|SYNOPSIS" <<<"$text" || fail "$f shows no usage"
done
# grep reads the whole page first: `man | grep -q` under pipefail fails when
# grep stops early and man dies of SIGPIPE.
grep -q -- "--repo" <<<"$(MANWIDTH=80 man -l "$man/strata-backup.1")" || fail "strata-backup(1) does not document --repo"
grep -q "0\.2\|$("$bin/strata" --version | cut -d' ' -f2)" <<<"$(MANWIDTH=80 man -l "$man/strata.1")" || fail "strata(1) has no version"

# bash completion
out=$(PATH="$bin:$PATH" bash -c '
  source "$1"
  complete -p strata >/dev/null || exit 3
  complete -p extent-dump >/dev/null || exit 4
  COMP_WORDS=(strata ""); COMP_CWORD=1; _strata_complete; echo "cmds: ${COMPREPLY[*]}"
  COMP_WORDS=(strata ba); COMP_CWORD=1; _strata_complete; echo "ba: ${COMPREPLY[*]}"
  COMP_WORDS=(strata backup --re); COMP_CWORD=2; _strata_complete; echo "opts: ${COMPREPLY[*]}"
' _ "$completion") || fail "completion: exit $?"
for c in $cmds; do
  grep -q "^cmds:.* $c\b\|^cmds: $c\b" <<<"$out" || fail "completion does not list '$c': $out"
done
grep -q "^ba: backup$" <<<"$out" || fail "'strata ba<TAB>' does not complete to backup: $out"
grep -q "^opts:.*--repo" <<<"$out" || fail "'strata backup --re<TAB>' does not offer --repo: $out"
echo "ok: $(wc -w <<<"$cmds") command pages, strata(1), extent-dump(1), completion"

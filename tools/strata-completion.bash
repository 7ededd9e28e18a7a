# bash completion for strata and extent-dump. Commands and options come from
# the tools' own --help, so they are always those of the installed version.
_strata_complete() {
  local cur=${COMP_WORDS[COMP_CWORD]} prog=${COMP_WORDS[0]}
  if [[ $prog == *strata && $COMP_CWORD -eq 1 && $cur != -* ]]; then
    local cmds
    cmds=$("$prog" --help 2>/dev/null | awk '/^Commands:/ {on = 1; next} on && /^  [a-z]/ {print $1}')
    COMPREPLY=($(compgen -W "$cmds" -- "$cur"))
    return
  fi
  if [[ $cur == -* ]]; then
    local opts
    if [[ $prog == *strata && $COMP_CWORD -gt 1 ]]; then
      opts=$("$prog" "${COMP_WORDS[1]}" --help 2>/dev/null | grep -oE -- '--[a-z][a-z-]*' | sort -u)
    else
      opts=$("$prog" --help 2>/dev/null | grep -oE -- '--[a-z][a-z-]*' | sort -u)
    fi
    COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    return
  fi
  COMPREPLY=($(compgen -f -- "$cur"))
}
complete -o filenames -F _strata_complete strata
complete -o filenames -F _strata_complete extent-dump

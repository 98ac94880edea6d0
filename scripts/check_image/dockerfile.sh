# shellcheck shell=bash
# The Dockerfile: global ARG defaults, the images its FROM lines name, the runtime user.
# Sourced by scripts/check-image.

declare -A DARGS=()
FROM_REFS=()
parse_dockerfile() {
  local kw rest ref stages=" " seen_from=0
  while read -r kw rest; do
    case "${kw^^}" in
      ARG)
        # Before the first FROM, ARGs are global (usable in FROM); later ones are kept for
        # defaults such as AFT_UID, without overriding a global of the same name.
        if [[ "$rest" == *=* ]] && { [ "$seen_from" = 0 ] || [ -z "${DARGS[${rest%%=*}]+x}" ]; }; then
          DARGS[${rest%%=*}]="${rest#*=}"
        fi
        ;;
      FROM)
        seen_from=1
        [[ "$rest" =~ ^--platform=[^[:space:]]+[[:space:]]+(.*)$ ]] && rest="${BASH_REMATCH[1]}"
        read -r ref _ <<<"$rest"
        while [[ "$ref" =~ \$\{([A-Za-z_][A-Za-z0-9_]*)\} ]]; do
          ref="${ref//${BASH_REMATCH[0]}/${DARGS[${BASH_REMATCH[1]}]:-}}"
        done
        [[ "$stages" == *" $ref "* ]] || FROM_REFS+=("$ref")
        [[ "$rest" =~ [[:space:]][Aa][Ss][[:space:]]+([^[:space:]]+) ]] && stages+="${BASH_REMATCH[1]} "
        ;;
    esac
  done < <(sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$DOCKERFILE")
  [ "${#FROM_REFS[@]}" -gt 0 ] || die "no FROM image in $DOCKERFILE"
}

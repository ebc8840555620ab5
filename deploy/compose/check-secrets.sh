#!/bin/sh
# Refuse the example secrets outside development.
#
# Usage: check-secrets.sh ENV_EXAMPLE. Every *PASSWORD*/*SECRET* variable that .env.example
# defines is compared with the value in this environment; one still equal to the example (or
# empty) stops the stack unless CARPRICE_ENV=development. Prints one line per problem.
set -eu
example="${1:?usage: check-secrets.sh ENV_EXAMPLE}"
[ "${CARPRICE_ENV:-production}" = "development" ] && { echo "development: example secrets allowed"; exit 0; }
status=0
while IFS= read -r line || [ -n "$line" ]; do
  case "$line" in ''|'#'*) continue ;; esac
  name="${line%%=*}"
  case "$name" in *[!A-Za-z0-9_]*|"") continue ;; esac
  case "$name" in *PASSWORD*|*SECRET*) ;; *) continue ;; esac
  example_value="${line#*=}"
  eval "actual=\${$name:-}"
  if [ -z "$actual" ]; then
    echo "refusing to start: $name is empty (set it in .env)" >&2
    status=1
  elif [ "$actual" = "$example_value" ]; then
    echo "refusing to start: $name still has the example value from .env.example (set a real secret in .env, or CARPRICE_ENV=development)" >&2
    status=1
  fi
done < "$example"
[ "$status" -eq 0 ] && echo "secrets: none is an example value"
exit "$status"

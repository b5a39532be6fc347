#!/usr/bin/env bash
# Builds a benchmark repository for `repoctx bench pack` from a PyPI sdist (default mypy 1.13.0:
# about 1,450 files, 16 MB of Python, stubs, C and docs) as a git repository with a history of
# ten commits, so that ordering by last change has something to order.
# usage: benchmarks/make-bench-repo.sh [DEST] [NAME==VERSION]
set -euo pipefail
dest=${1:-.bench/mypy}
spec=${2:-mypy==1.13.0}
if [ -e "$dest" ]; then echo "$dest exists; remove it first" >&2; exit 1; fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps --no-binary :all: -d "$tmp/sdist" "$spec"
mkdir -p "$(dirname "$dest")" "$tmp/tree"
tar xzf "$tmp"/sdist/*.tar.gz --no-same-owner -C "$tmp/tree"
mv "$tmp"/tree/* "$dest"
cd "$dest"
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.invalid
export GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.invalid
git init -q -b main
# ten commits, oldest first: each adds a tenth of the files, sorted by path
git ls-files --others --exclude-standard -z | sort -z | split -t '\0' -n r/10 - "$tmp/chunk."
stamp=1600000000
for chunk in "$tmp"/chunk.*; do
  xargs -0 git add -f -- < "$chunk"
  GIT_AUTHOR_DATE="@$stamp +0000" GIT_COMMITTER_DATE="@$stamp +0000" git commit -q -m "part $chunk"
  stamp=$((stamp + 86400))
done
echo "$dest: $(git ls-files | wc -l) files, $(git ls-files -z | xargs -0 cat | wc -c) bytes"

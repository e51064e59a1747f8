#!/bin/sh
# Fetches the one data file the repository does not ship: Tiny Shakespeare (karpathy/char-rnn,
# 1,115,394 bytes), the default text of `gdn2 train --task text`, `gdn2 demo --shakespeare`,
# `gdn2 quantize` and the essay haystack of `gdn2 eval` / `gdn2 task`. See data/README.md.
#
#   sh scripts/get_data.sh [SOURCE]
#
# SOURCE: a URL (default below) or a local file to copy. The file lands in data/tinyshakespeare.txt
# (or $GDN2_DATA/tinyshakespeare.txt); it is written to a temporary name, its size checked, then
# renamed, so an interrupted or wrong download never leaves a file the commands would read.
set -eu
URL=https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt
SIZE=1115394
SRC=${1:-$URL}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${GDN2_DATA:-$ROOT/data}
DEST=$DIR/tinyshakespeare.txt

size_of() { wc -c < "$1" | tr -d ' '; }

if [ -f "$DEST" ] && [ "$(size_of "$DEST")" = "$SIZE" ]; then
    echo "get_data.sh: $DEST is already there ($SIZE bytes)"
    exit 0
fi
mkdir -p "$DIR"
TMP=$DEST.tmp.$$
trap 'rm -f "$TMP"' EXIT INT TERM
if [ -f "$SRC" ]; then
    cat "$SRC" > "$TMP"
elif command -v curl >/dev/null 2>&1; then
    curl -fsSL --retry 3 -o "$TMP" "$SRC" || { echo "get_data.sh: download of $SRC failed (curl)" >&2; exit 1; }
elif command -v wget >/dev/null 2>&1; then
    wget -q -O "$TMP" "$SRC" || { echo "get_data.sh: download of $SRC failed (wget)" >&2; exit 1; }
else
    echo "get_data.sh: neither curl nor wget is installed; fetch $URL to $DEST by hand" >&2
    exit 1
fi
GOT=$(size_of "$TMP")
if [ "$GOT" != "$SIZE" ]; then
    echo "get_data.sh: $SRC is $GOT bytes, expected $SIZE (Tiny Shakespeare); $DEST not written" >&2
    exit 1
fi
mv -f "$TMP" "$DEST"
trap - EXIT INT TERM
echo "get_data.sh: wrote $DEST ($SIZE bytes)"

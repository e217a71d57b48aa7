#!/usr/bin/env bash
# Download Imagenette (Howard, 2019; full-size images) into data/imagenette2, where
# `python main.py -d imagenette` looks for it. Safe to re-run: it does nothing when the data is there.
#
#   ./get_imagenette.sh                 # into ./data
#   DATA_DIR=/scratch/data ./get_imagenette.sh   # elsewhere (then pass --data_dir /scratch/data)
set -euo pipefail

URL="${IMAGENETTE_URL:-https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz}"
DATA_DIR="${DATA_DIR:-data}"
TARGET="$DATA_DIR/imagenette2"
ARCHIVE="$DATA_DIR/imagenette2.tgz"

if [ -d "$TARGET/train" ] && [ -d "$TARGET/val" ]; then
    echo "Imagenette is already in $TARGET; nothing to do."
    exit 0
fi

# gzip's CRC covers the whole stream: a truncated or corrupted archive fails this, loudly.
archive_is_whole() {
    gzip --test "$ARCHIVE" 2>/dev/null && tar -tzf "$ARCHIVE" >/dev/null 2>&1
}

mkdir -p "$DATA_DIR"
if [ -f "$ARCHIVE" ] && archive_is_whole; then
    echo "Using the complete archive already at $ARCHIVE"
else
    # A partial archive from an interrupted download is resumed, not restarted.
    echo "Downloading $URL -> $ARCHIVE"
    if command -v curl >/dev/null; then
        curl --fail --location --retry 3 --continue-at - --output "$ARCHIVE" "$URL"
    else
        wget --tries=3 --continue --output-document "$ARCHIVE" "$URL"
    fi
fi

echo "Verifying $ARCHIVE"
if ! archive_is_whole; then
    rm -f "$ARCHIVE"
    echo "error: $ARCHIVE is truncated or corrupt and was removed; run ./get_imagenette.sh again." >&2
    exit 1
fi

# Extract next to the target and rename, so an interrupted extraction never looks complete.
STAGING="$(mktemp -d "$DATA_DIR/.imagenette2.XXXXXX")"
trap 'rm -rf "$STAGING"' EXIT
tar -xzf "$ARCHIVE" -C "$STAGING"
if [ ! -d "$STAGING/imagenette2/train" ] || [ ! -d "$STAGING/imagenette2/val" ]; then
    echo "error: $ARCHIVE does not contain imagenette2/train and imagenette2/val" >&2
    exit 1
fi
rm -rf "$TARGET"
mv "$STAGING/imagenette2" "$TARGET"
rm -f "$ARCHIVE"
echo "Imagenette is ready in $TARGET"

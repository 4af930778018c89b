#!/bin/sh
# Installs an mtlens release (`make dist`'s directory, or an unpacked release tarball):
#   [PREFIX=/usr/local] [DESTDIR=] install.sh [RELEASE_DIR]   (default: this script's directory)
#   [PREFIX=/usr/local] [DESTDIR=] install.sh --uninstall     (keeps config and state)
# Program in $PREFIX/lib/mtlens, the command $PREFIX/bin/mtlens, the systemd unit in
# $PREFIX/lib/systemd/system, config /etc/mtlens/config.yaml (never overwritten), state
# /var/lib/mtlens. Everything lands below $DESTDIR when it is set (staging, packaging, tests).
set -eu
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
lib="$DESTDIR$PREFIX/lib/mtlens"
link="$DESTDIR$PREFIX/bin/mtlens"
unit="$DESTDIR$PREFIX/lib/systemd/system/mtlens.service"
etc="$DESTDIR/etc/mtlens"
state="$DESTDIR/var/lib/mtlens"

if [ "${1:-}" = "--uninstall" ]; then
  rm -rf "$lib" "$lib.new"
  rm -f "$link" "$unit"
  echo "mtlens removed from $DESTDIR$PREFIX; $etc and $state are kept"
  exit 0
fi

src=${1:-$(dirname "$(readlink -f "$0")")}
[ -x "$src/bin/mtlens" ] && [ -f "$src/dist/src/cli.js" ] || {
  echo "install.sh: $src is not an mtlens release (run make dist)" >&2
  exit 1
}

# The new program is copied beside the old one and swapped in, so a failed copy leaves the old one.
mkdir -p "$DESTDIR$PREFIX/lib" "$DESTDIR$PREFIX/bin"
rm -rf "$lib.new"
cp -R "$src" "$lib.new"
rm -f "$lib.new/install.sh"
rm -rf "$lib"
mv "$lib.new" "$lib"
# Relative, so the link holds below DESTDIR too; bin/mtlens follows it to find its program.
ln -sfn ../lib/mtlens/bin/mtlens "$link"

mkdir -p "$(dirname "$unit")"
sed "s#/usr/local/#$PREFIX/#g" "$src/deploy/systemd/mtlens.service" > "$unit"
chmod 0644 "$unit"

mkdir -p "$etc"
if [ -e "$etc/config.yaml" ]; then
  echo "keeping $etc/config.yaml (the release's default is $lib/config.yaml)"
else
  install -m 0640 "$src/config.yaml" "$etc/config.yaml"
fi
mkdir -p "$state"
chmod 0700 "$state"
echo "mtlens installed: $link -> $lib"

#!/usr/bin/env bash
# A Python base image made from Debian's packages, for hosts that cannot pull `python:3.11-slim`.
#
#   hack/images/base.sh          make (or reuse) the image and print its reference on stdout
#
# debootstrap (minbase) builds Debian bookworm with python3 (3.11, the version the Dockerfiles pin),
# python3-venv and python-is-python3, so the Dockerfiles' `python -m venv` works unchanged; `docker import`
# turns the tree into a local image. The image name carries a hash of this script and of the CA
# certificates this host trusts (/usr/local/share/ca-certificates: an egress proxy's CA, where there is one),
# which are copied in so pip and apt inside the builds trust what the host trusts. A tarball of the tree is
# kept in the cache, so a new Docker data root imports it again in seconds instead of re-running debootstrap.
#
#   GPT_IMAGES_CACHE=DIR   cache root (default ${XDG_CACHE_HOME:-~/.cache}/gpt-operator/images)
#   DEBIAN_MIRROR=URL      (default http://deb.debian.org/debian)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
suite=bookworm
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
packages=python3,python3-venv,python-is-python3,ca-certificates
cache="${GPT_IMAGES_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpt-operator/images}"

log() { echo "==> $*" >&2; }

key=$( { cat "$here/base.sh"; echo "$suite $mirror $packages"; cat /usr/local/share/ca-certificates/*.crt 2>/dev/null || true; } \
  | sha256sum | cut -c1-12)
image="gpt-operator.local/debian-python:3.11-$suite-$key"
tarball="$cache/debian-python-$suite-$key.tar"

if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image"
  exit 0
fi

import() {
  docker import \
    --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python"]' \
    --message "debootstrap $suite ($packages)" \
    "$tarball" "$image" >/dev/null
}

if [ -f "$tarball" ]; then
  log "base image $image from the cached tree $tarball"
  import
  echo "$image"
  exit 0
fi

command -v debootstrap >/dev/null || { echo "base.sh: needs debootstrap (apt-get install debootstrap)" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "base.sh: debootstrap needs root" >&2; exit 1; }
log "base image $image: debootstrap $suite ($packages); about 2 minutes"
start=$(date +%s)
mkdir -p "$cache"
root=$(mktemp -d "$cache/rootfs.XXXXXX")
trap 'rm -rf "$root" "$tarball.tmp"' EXIT
debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1 \
  || { tail -n 30 "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# the host's extra CAs, and pip told to use the system store that now holds them
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
  chroot "$root" update-ca-certificates >/dev/null 2>&1
fi
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
# what a slim image leaves out: apt lists, caches, docs and man pages
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
  "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/var/log/*
tar --numeric-owner -C "$root" -cf "$tarball.tmp" .
mv "$tarball.tmp" "$tarball"
import
log "base image made in $(( $(date +%s) - start ))s ($(du -h "$tarball" | cut -f1) tree)"
echo "$image"

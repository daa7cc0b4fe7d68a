#!/usr/bin/env bash
# Builds the same image as packaging/Containerfile without an image registry: a Debian root
# file system from Debian's packages (debootstrap --variant=minbase), fuse3 and the s3mount
# package installed into it, then `podman import`. Run as root from the repo root:
#   bash packaging/build-image.sh [TAG]        (default tag: s3mount:latest)
# Needs debootstrap and podman (apt-get install debootstrap podman runc).
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-s3mount:latest}
deb=$(bash packaging/build-deb.sh)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=ca-certificates,fuse3 bookworm "$root" >/dev/null
cp "$deb" "$root/tmp/"
chroot "$root" dpkg -i "/tmp/$(basename "$deb")" >/dev/null
rm -f "$root/tmp/"*.deb
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
mkdir -p "$root/mnt/data"
tar -C "$root" -c . | podman import --change 'CMD ["s3mount", "--help"]' - "$tag" >/dev/null
echo "$tag"

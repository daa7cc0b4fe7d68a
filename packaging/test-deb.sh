#!/usr/bin/env bash
# Builds the Debian package, installs it with dpkg on this machine, and checks it as a user
# would: the files and man pages are there (`man -w`), and an /etc/fstab line mounts with
# `mount`, `mount -a -t s3mount` and unmounts with `umount`, against the embedded server on
# loopback. Restores /etc/fstab and removes the package afterwards. Run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(bash packaging/build-deb.sh)
echo "built $deb ($(du -h "$deb" | cut -f1))"
work=$(mktemp -d)
cp /etc/fstab "$work/fstab.orig"
cleanup() {
  umount -l "$work/mnt" 2>/dev/null || true
  cp "$work/fstab.orig" /etc/fstab
  [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true
  dpkg -r s3mount >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
dpkg -i "$deb" >/dev/null
for f in /usr/bin/s3mount /sbin/mount.s3mount /lib/systemd/system/s3mount@.service \
         /usr/share/bash-completion/completions/s3mount /usr/share/doc/s3mount/README.md; do
  test -e "$f" || { echo "missing $f"; exit 1; }
done
man -w s3mount >/dev/null
man -w 8 mount.s3mount >/dev/null
if readelf -S /usr/bin/s3mount | grep -q '\.debug_info'; then
  echo "/usr/bin/s3mount carries debug info"; exit 1
fi
/usr/bin/s3mount --version
export S3MOUNT_SERVE_ACCESS_KEY=debtest S3MOUNT_SERVE_SECRET_KEY=debtest-secret
/usr/bin/s3mount serve "$work/store" --addr 127.0.0.1:0 --bucket debtest > "$work/serve.out" &
srv=$!
for _ in $(seq 1 100); do [ -s "$work/serve.out" ] && break; sleep 0.1; done
endpoint=$(head -1 "$work/serve.out" | awk '{print $2}')
mkdir -p "$work/mnt"
echo "debtest $work/mnt s3mount _netdev,endpoint=$endpoint 0 0" >> /etc/fstab
export AWS_ACCESS_KEY_ID=debtest AWS_SECRET_ACCESS_KEY=debtest-secret HOME="$work"
# `mount MOUNTPOINT` finds the line; mount(8) runs /sbin/mount.s3mount.
mount "$work/mnt"
echo "written through fstab" > "$work/mnt/hello.txt"
umount "$work/mnt"
mountpoint -q "$work/mnt" && { echo "umount left it mounted"; exit 1; }
# `mount -a -t s3mount` mounts every s3mount line (here: ours).
mount -a -t s3mount
mountpoint -q "$work/mnt" || { echo "mount -a did not mount it"; exit 1; }
grep -qx "written through fstab" "$work/mnt/hello.txt"
umount "$work/mnt"
echo "package OK: installed, man pages present, fstab mount and umount work"

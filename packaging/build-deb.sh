#!/usr/bin/env bash
# Builds the Debian package: target/s3mount_<version>_<arch>.deb. One command, from the repo root:
#   bash packaging/build-deb.sh
# Contents: /usr/bin/s3mount (release build without debug info, profile `dist`),
# /sbin/mount.s3mount (fstab helper), the systemd template unit, man pages s3mount(1),
# s3mount-{serve,check,recover}(1) and mount.s3mount(8) and shell completions (generated from
# the CLI definitions: packaging/gen_assets.rs), and the docs. Needs only cargo and dpkg-deb.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
cargo build --profile dist --bin s3mount --quiet
assets=target/deb-assets
rm -rf "$assets"
cargo run --profile dist --quiet --example gen_assets -- "$assets"
root=target/deb-root
rm -rf "$root"
install -Dm755 target/dist/s3mount "$root/usr/bin/s3mount"
install -Dm755 mount-helper/mount.s3mount "$root/sbin/mount.s3mount"
install -Dm644 packaging/systemd/s3mount@.service "$root/lib/systemd/system/s3mount@.service"
for page in "$assets"/man/*.1; do
  install -Dm644 "$page" "$root/usr/share/man/man1/$(basename "$page")"
done
install -Dm644 "$assets/man/mount.s3mount.8" "$root/usr/share/man/man8/mount.s3mount.8"
gzip -9n "$root"/usr/share/man/man*/*
install -Dm644 "$assets/completions/s3mount.bash" "$root/usr/share/bash-completion/completions/s3mount"
install -Dm644 "$assets/completions/_s3mount" "$root/usr/share/zsh/vendor-completions/_s3mount"
install -Dm644 "$assets/completions/s3mount.fish" "$root/usr/share/fish/vendor_completions.d/s3mount.fish"
for d in README.md docs/*.md; do
  install -Dm644 "$d" "$root/usr/share/doc/s3mount/$(basename "$d")"
done
size=$(du -sk "$root" | cut -f1)
mkdir -p "$root/DEBIAN"
cat > "$root/DEBIAN/control" <<CONTROL
Package: s3mount
Version: $version
Architecture: $arch
Maintainer: s3mount developers <s3mount@localhost>
Installed-Size: $size
Depends: fuse3, libc6
Section: utils
Priority: optional
Homepage: https://github.com/s3mount/s3mount
Description: mount an S3-compatible bucket as a local directory
 A FUSE file system for AWS S3, MinIO, Ceph RGW, Aliyun OSS, Garage and small
 gateways: profiles from the AWS files, fstab mounts (mount.s3mount), a systemd
 template unit, a journal of pending uploads, Prometheus metrics.
CONTROL
out="target/s3mount_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$root" "$out" >/dev/null
echo "$out"

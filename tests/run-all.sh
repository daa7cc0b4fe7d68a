#!/usr/bin/env bash
# Runs every test: unit and integration tests against the embedded S3 server, then the FUSE
# tests again against moto_server (an independent S3 implementation) on loopback.
# Installs what it needs when missing (fuse3, moto). Run as root (FUSE mounts) from the repo root.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v fusermount3 >/dev/null || ! command -v s3fs >/dev/null \
   || ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null; then
  # fuse3 for the mounts; s3fs-fuse to check that it reads what s3mount writes; man-db for the
  # package's man pages; podman, runc and debootstrap for the container image.
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    fuse3 s3fs man-db podman runc debootstrap >/dev/null
fi
if ! command -v moto_server >/dev/null; then
  python3 -m pip install -q 'moto[server]'
fi

echo "== lint"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings

echo "== unit and integration tests (embedded server)"
cargo test -- --test-threads=4

echo "== FUSE tests against moto_server"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
log=$(mktemp)
moto_server -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill $moto_pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then break; fi
  sleep 0.2
done
S3MOUNT_TEST_ENDPOINT="http://127.0.0.1:$port" \
S3MOUNT_TEST_ACCESS_KEY=testing S3MOUNT_TEST_SECRET_KEY=testing \
S3MOUNT_TEST_BUCKET=s3mount-moto \
  cargo test --test it fuse_ -- --test-threads=4
echo "== FUSE tests against moto_server, listing with ListObjects v1"
S3MOUNT_TEST_ENDPOINT="http://127.0.0.1:$port" \
S3MOUNT_TEST_ACCESS_KEY=testing S3MOUNT_TEST_SECRET_KEY=testing \
S3MOUNT_TEST_BUCKET=s3mount-moto-v1 S3MOUNT_TEST_MOUNT_ARGS="--list-version 1" \
  cargo test --test it fuse_ -- --test-threads=4

# The same FUSE tests against gateways that lack calls, with no flags on the mounts: s3mount must
# detect what is missing (docs/compatibility.md).
for preset in minio-no-multipart seven-call sigv2-only; do
  echo "== FUSE tests against the embedded server emulating: $preset"
  S3MOUNT_TEST_EMULATE=$preset cargo test --test it fuse_ -- --test-threads=4
done

# The Debian package: built, installed with dpkg, an fstab line mounted and unmounted.
echo "== Debian package"
bash packaging/test-deb.sh

# The container image: built from a local root file system, run with podman (runc).
echo "== container image"
bash packaging/test-image.sh

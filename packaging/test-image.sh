#!/usr/bin/env bash
# Builds the container image from a local root file system (packaging/build-image.sh) and runs
# it with Debian's podman and runc: inside the container, s3mount mounts a bucket of the
# embedded server on the host's loopback, reads an object the host put there and writes one
# the host then finds. Run as root; removes the image afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
tag=s3mount:ci-test
work=$(mktemp -d)
cleanup() {
  [ -n "${srv:-}" ] && kill "$srv" 2>/dev/null || true
  podman rmi -f "$tag" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
bash packaging/build-image.sh "$tag" >/dev/null
mkdir -p "$work/import"
echo "hello from the host" > "$work/import/hello.txt"
export S3MOUNT_SERVE_ACCESS_KEY=ctest S3MOUNT_SERVE_SECRET_KEY=ctest-secret
target/dist/s3mount serve "$work/store" --addr 127.0.0.1:0 --bucket cbucket \
  --import "$work/import=cbucket" > "$work/serve.out" 2>&1 &
srv=$!
for _ in $(seq 1 100); do grep -q '^endpoint:' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
endpoint=$(awk '/^endpoint:/ {print $2}' "$work/serve.out")
out=$(timeout 300 podman --runtime runc run --rm --network host \
  --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 \
  --device /dev/fuse --cap-add SYS_ADMIN \
  -e AWS_ACCESS_KEY_ID=ctest -e AWS_SECRET_ACCESS_KEY=ctest-secret "$tag" \
  sh -c "s3mount --endpoint $endpoint cbucket /mnt/data && cat /mnt/data/hello.txt \
         && echo written in the container > /mnt/data/from-container.txt \
         && fusermount3 -u /mnt/data && echo unmounted")
echo "$out"
echo "$out" | grep -qx "hello from the host"
echo "$out" | grep -qx "unmounted"
grep -q '"key":"from-container.txt"' "$work"/store/cbucket/meta/*.json
echo "image OK: built from a local root file system, mounted a bucket in podman"

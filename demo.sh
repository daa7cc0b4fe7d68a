#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine as root: install fuse3 if missing, build s3mount,
# start its embedded S3 server on loopback with a demo bucket, mount the bucket, list it, read from
# it, write to it (mkdir, a multipart file, rename), then unmount and stop. `./demo.sh --keep` leaves the mount up and says how to stop it.
set -euo pipefail
cd "$(dirname "$0")"
keep=${1:-}

if ! command -v fusermount3 >/dev/null; then
  echo "== installing fuse3"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3 >/dev/null
fi

echo "== building (release)"
cargo build --release --quiet
bin=$PWD/target/release/s3mount

work=$(mktemp -d /tmp/s3mount-demo.XXXXXX)
mkdir -p "$work/seed/docs" "$work/mnt"
echo "Hello from s3mount" > "$work/seed/hello.txt"
cp README.md "$work/seed/docs/README.md"
head -c $((64 << 20)) /dev/urandom > "$work/seed/random-64M.bin"

echo "== starting the embedded S3 server on loopback"
"$bin" serve "$work/store" --addr 127.0.0.1:0 --import "$work/seed=demo" >"$work/serve.out" 2>"$work/serve.err" &
server=$!
cleanup() {
  fusermount3 -u "$work/mnt" 2>/dev/null || umount -l "$work/mnt" 2>/dev/null || true
  kill "$server" 2>/dev/null || true
  rm -rf "$work"
}
if [ "$keep" != "--keep" ]; then trap cleanup EXIT; fi
for _ in $(seq 1 100); do grep -q '^endpoint:' "$work/serve.out" 2>/dev/null && break; sleep 0.1; done
endpoint=$(awk '/^endpoint:/{print $2}' "$work/serve.out")
echo "   $endpoint (bucket: demo)"

echo "== mounting demo on $work/mnt"
export AWS_ACCESS_KEY_ID=s3mount AWS_SECRET_ACCESS_KEY=s3mount-secret
"$bin" demo "$work/mnt" --endpoint "$endpoint"
grep " $work/mnt " /proc/mounts

echo "== ls -la"
ls -la "$work/mnt" "$work/mnt/docs"
echo "== cat hello.txt"
cat "$work/mnt/hello.txt"
echo "== sequential read of random-64M.bin (checksum vs the original)"
a=$(sha256sum < "$work/seed/random-64M.bin" | cut -d' ' -f1)
start=$(date +%s.%N)
b=$(sha256sum < "$work/mnt/random-64M.bin" | cut -d' ' -f1)
end=$(date +%s.%N)
echo "   original: $a"
echo "   mounted:  $b   ($(python3 -c "print(round(64/($end-$start)))") MiB/s)"
[ "$a" = "$b" ] && echo "== OK: the mount serves the bucket byte for byte"

echo "== writing: mkdir, a 100 MiB file (multipart, parts sent while writing), rename"
mkdir "$work/mnt/new"
start=$(date +%s.%N)
dd if="$work/seed/random-64M.bin" of="$work/mnt/new/copy.bin" bs=1M conv=fsync status=none
head -c $((36 << 20)) "$work/seed/random-64M.bin" >> "$work/mnt/new/copy.bin"
end=$(date +%s.%N)
mv "$work/mnt/new" "$work/mnt/renamed"
ls -la "$work/mnt/renamed"
want=$(cat "$work/seed/random-64M.bin" <(head -c $((36 << 20)) "$work/seed/random-64M.bin") | sha256sum | cut -d' ' -f1)
got=$(sha256sum < "$work/mnt/renamed/copy.bin" | cut -d' ' -f1)
echo "   written: $want"
echo "   read:    $got   (write $(python3 -c "print(round(100/($end-$start)))") MiB/s)"
[ "$want" = "$got" ] && echo "== OK: written, renamed and read back byte for byte"

if [ "$keep" = "--keep" ]; then
  echo "Left mounted at $work/mnt. Stop with: fusermount3 -u $work/mnt; kill $server"
fi

#!/usr/bin/env python3
"""Write-path benchmark: s3mount vs raw PUT (same SDK, server, run) and peers.

Measures on fresh mounts: sequential write of a file (`dd bs=1M conv=fsync` from a local file of
pseudo-random bytes), creating 1,000 4 KiB files, and renaming a 100-file directory. s3mount runs
twice: with multipart (the default: 8 MiB parts sent while writing) and with `--no-multipart` (one
PutObject at close). References: one raw multipart upload (8 MiB parts, 8 in flight) and one raw
PutObject of the same size. s3fs-fuse and rclone mount (`--vfs-cache-mode writes`) when installed.

Usage (as root, from the repo root): python3 bench/write.py [--size-mib 1024] [--tools s3mount,s3fs,rclone]
"""
import argparse, os, shutil, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (shared set-up: server, raw client, mounts)


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=1000)
    ap.add_argument("--tools", default="s3mount,s3fs,rclone")
    a = ap.parse_args()
    run.sh(["cargo", "build", "--release", "--quiet", "--bin", "s3mount", "--example", "rawget"], cwd=run.ROOT)
    run.WORK = tempfile.mkdtemp(prefix="s3mount-wbench.")
    srv = subprocess.Popen([run.BIN, "serve", os.path.join(run.WORK, "store"), "--addr", "127.0.0.1:0", "--bucket", run.BUCKET],
                           stdout=subprocess.PIPE, text=True,
                           env=dict(os.environ, S3MOUNT_SERVE_ACCESS_KEY=run.AK, S3MOUNT_SERVE_SECRET_KEY=run.SK))
    try:
        run.EP = srv.stdout.readline().split()[1]
        run.ENV = dict(os.environ, BENCH_ENDPOINT=run.EP, BENCH_ACCESS_KEY=run.AK, BENCH_SECRET_KEY=run.SK,
                       BENCH_BUCKET=run.BUCKET, AWS_ACCESS_KEY_ID=run.AK, AWS_SECRET_ACCESS_KEY=run.SK, HOME=run.WORK)
        run.ENV.pop("AWS_CA_BUNDLE", None)
        src = os.path.join(run.WORK, "src.bin")
        run.sh(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={a.size_mib}"])
        raw_put = run.raw("populate-big", "raw.bin", a.size_mib)["mib_s"]
        raw_mp = run.raw("put-multipart", "raw-mp.bin", a.size_mib, 8, 8)["mib_s"]
        tools = [t for t in a.tools.split(",") if t.startswith("s3mount") or shutil.which(t)]
        if "s3mount" in tools and "s3mount-single" not in tools:
            tools.insert(tools.index("s3mount") + 1, "s3mount-single")
        # Each tool's sequential write compares with the raw upload of its own kind.
        ref = {"s3mount-single": raw_put}
        res = {}
        for tool in tools:
            mnt = os.path.join(run.WORK, "mnt-" + tool)
            m = {}
            with run.Mounted(tool, mnt, writable=True):
                try:
                    dt = timed(lambda: run.sh(["dd", f"if={src}", f"of={mnt}/{tool}-seq.bin", "bs=1M", "conv=fsync"]))
                    m["seq write MiB/s"] = a.size_mib / dt
                except subprocess.CalledProcessError as e:
                    # e.g. a peer that needs multipart, which the embedded server lacks for now
                    print(f"{tool}: sequential write failed: {e.stderr.strip()[-200:]}", file=sys.stderr)
                    m["seq write MiB/s"] = float("nan")
            with run.Mounted(tool, mnt, writable=True):
                d = os.path.join(mnt, f"{tool}-small")
                os.mkdir(d)
                blob = os.urandom(4096)

                def create():
                    for i in range(a.files):
                        with open(os.path.join(d, f"f{i:04}"), "wb") as f:
                            f.write(blob)

                m["create files/s"] = a.files / timed(create)
            with run.Mounted(tool, mnt, writable=True):
                d = os.path.join(mnt, f"{tool}-ren")
                os.mkdir(d)
                for i in range(100):
                    with open(os.path.join(d, f"f{i:03}"), "wb") as f:
                        f.write(b"x" * 100)
                try:
                    m["rename 100-file dir s"] = timed(lambda: os.rename(d, d + "-moved"))
                    assert len(os.listdir(d + "-moved")) == 100
                except OSError as e:
                    print(f"{tool}: directory rename failed: {e}", file=sys.stderr)
                    m["rename 100-file dir s"] = float("nan")
            res[tool] = m
        print(f"\n# write benchmark: {a.size_mib} MiB file, {a.files} x 4 KiB files, embedded server on loopback, {os.cpu_count()} cores")
        print(f"raw PutObject MiB/s {raw_put:.1f}   raw multipart (8 MiB x 8) MiB/s {raw_mp:.1f}")
        print(f"{'tool':15} {'write MiB/s':>12} {'x raw':>7} {'files/s':>9} {'rename s':>9}")
        for tool, m in res.items():
            r = ref.get(tool, raw_mp)
            print(f"{tool:15} {m['seq write MiB/s']:12.1f} {m['seq write MiB/s']/r:7.2f} "
                  f"{m['create files/s']:9.1f} {m['rename 100-file dir s']:9.3f}")
        print("x raw: s3mount-single vs raw PutObject; the others vs raw multipart")
    finally:
        srv.terminate()
        shutil.rmtree(run.WORK, ignore_errors=True)


if __name__ == "__main__":
    main()

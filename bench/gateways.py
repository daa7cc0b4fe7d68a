#!/usr/bin/env python3
"""Gateway benchmark: s3mount on the embedded server emulating gateways that lack calls, as
ratios to the full-API server in the same run.

For each preset (full, minio-no-multipart, seven-call, sigv2-only) a fresh server and a mount with
no flags (s3mount detects what is missing): sequential write of a file (`dd bs=1M conv=fsync`),
renaming that file (CopyObject, or GET streamed into PUT), and renaming a 100-file directory.

Presets run interleaved, `--rounds` times (default 3); the table shows medians.

Usage (as root, from the repo root): python3 bench/gateways.py [--size-mib 512] [--rounds 3]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (shared set-up: raw client, mounts)

PRESETS = ["full", "minio-no-multipart", "seven-call", "sigv2-only"]


def timed(f):
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def measure(preset, src, size_mib):
    srv = subprocess.Popen([run.BIN, "serve", os.path.join(run.WORK, "store-" + preset), "--addr", "127.0.0.1:0",
                            "--bucket", run.BUCKET, "--emulate", preset],
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                           env=dict(os.environ, S3MOUNT_SERVE_ACCESS_KEY=run.AK, S3MOUNT_SERVE_SECRET_KEY=run.SK))
    try:
        run.EP = srv.stdout.readline().split()[1]
        run.ENV = dict(os.environ, AWS_ACCESS_KEY_ID=run.AK, AWS_SECRET_ACCESS_KEY=run.SK, HOME=run.WORK)
        run.ENV.pop("AWS_CA_BUNDLE", None)
        mnt = os.path.join(run.WORK, "mnt")
        m = {}
        with run.Mounted("s3mount", mnt, writable=True):
            dst = os.path.join(mnt, "seq.bin")
            m["write MiB/s"] = size_mib / timed(lambda: run.sh(["dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fsync"]))
            m["file rename s"] = timed(lambda: os.rename(dst, dst + ".moved"))
            d = os.path.join(mnt, "dir")
            os.mkdir(d)
            for i in range(100):
                with open(os.path.join(d, f"f{i:03}"), "wb") as f:
                    f.write(b"x" * 100)
            m["dir rename s"] = timed(lambda: os.rename(d, d + "-moved"))
            assert len(os.listdir(d + "-moved")) == 100
            assert os.path.getsize(dst + ".moved") == size_mib << 20
        return m
    finally:
        srv.terminate()
        srv.wait()
        # Each preset starts from the same disk and page-cache state (earlier runs measured the
        # later presets against the dirty pages of the earlier ones).
        shutil.rmtree(os.path.join(run.WORK, "store-" + preset), ignore_errors=True)
        run.sh(["sync"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    run.sh(["cargo", "build", "--release", "--quiet", "--bin", "s3mount"], cwd=run.ROOT)
    run.WORK = tempfile.mkdtemp(prefix="s3mount-gbench.")
    try:
        src = os.path.join(run.WORK, "src.bin")
        run.sh(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={a.size_mib}"])
        # Presets interleaved round by round, medians reported: the machine is shared and noisy.
        runs = {p: [] for p in PRESETS}
        for _ in range(a.rounds):
            for p in PRESETS:
                runs[p].append(measure(p, src, a.size_mib))
        res = {p: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for p, rs in runs.items()}
        full = res["full"]
        print(f"\n# gateway benchmark: {a.size_mib} MiB file, 100-file dir, embedded server on loopback, {os.cpu_count()} cores, median of {a.rounds}")
        print(f"{'preset':20} {'write MiB/s':>12} {'x full':>7} {'file mv s':>10} {'x full':>7} {'dir mv s':>9} {'x full':>7}")
        for p, m in res.items():
            print(f"{p:20} {m['write MiB/s']:12.1f} {m['write MiB/s']/full['write MiB/s']:7.2f} "
                  f"{m['file rename s']:10.3f} {m['file rename s']/full['file rename s']:7.2f} "
                  f"{m['dir rename s']:9.3f} {m['dir rename s']/full['dir rename s']:7.2f}")
        print("x full: write throughput ratio (higher is better); rename time ratio (lower is better)")
    finally:
        shutil.rmtree(run.WORK, ignore_errors=True)


if __name__ == "__main__":
    main()

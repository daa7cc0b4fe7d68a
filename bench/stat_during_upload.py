#!/usr/bin/env python3
"""Responsiveness during a large write: `stat` latency of another file while a 1 GiB file is
written (`dd bs=1M conv=fsync`) and uploaded, against the same `stat` on an idle mount.

The mount runs with `--metadata-ttl 0`, so each `stat` reaches the daemon (a getattr that HEADs
the object): a request that must not wait behind the writer's disk I/O or hashing. Runs the
default mount (multipart, parts sent while writing) and `--no-multipart` (one PutObject at close,
the staging file streamed from disk). Prints p50 / p99 / max in milliseconds and the ratio of the
busy p99 to the idle p99.

Usage (as root, from the repo root): python3 bench/stat_during_upload.py [--size-mib 1024] [--bin PATH]
"""
import argparse, os, shutil, statistics, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (shared set-up: server, mounts)


def quantiles(xs):
    xs = sorted(xs)
    if not xs:
        return float("nan"), float("nan"), float("nan")
    return statistics.median(xs), xs[min(len(xs) - 1, int(len(xs) * 0.99))], xs[-1]


def stats_while(path, busy):
    """stat(path) back to back while busy() runs (or for 3 s when busy is None); latencies in ms."""
    lat, done = [], threading.Event()
    if busy is None:
        threading.Timer(3.0, done.set).start()
    else:
        def work():
            try:
                busy()
            finally:
                done.set()
        threading.Thread(target=work).start()
    while not done.is_set():
        t = time.perf_counter()
        os.stat(path)
        lat.append((time.perf_counter() - t) * 1000)
        time.sleep(0.005)
    return lat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--bin", default=run.BIN, help="the s3mount binary to measure")
    a = ap.parse_args()
    if a.bin == run.BIN:
        run.sh(["cargo", "build", "--release", "--quiet", "--bin", "s3mount"], cwd=run.ROOT)
    run.WORK = tempfile.mkdtemp(prefix="s3mount-statbench.")
    srv = subprocess.Popen([a.bin, "serve", os.path.join(run.WORK, "store"), "--addr", "127.0.0.1:0", "--bucket", run.BUCKET],
                           stdout=subprocess.PIPE, text=True,
                           env=dict(os.environ, S3MOUNT_SERVE_ACCESS_KEY=run.AK, S3MOUNT_SERVE_SECRET_KEY=run.SK))
    mounts = []
    try:
        ep = srv.stdout.readline().split()[1]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=run.AK, AWS_SECRET_ACCESS_KEY=run.SK, HOME=run.WORK)
        env.pop("AWS_CA_BUNDLE", None)
        src = os.path.join(run.WORK, "src.bin")
        run.sh(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={a.size_mib}"])
        rows = []
        for name, extra in [("multipart", []), ("single PUT", ["--no-multipart"])]:
            mnt = os.path.join(run.WORK, "mnt-" + name.replace(" ", "-"))
            os.makedirs(mnt)
            run.sh([a.bin, run.BUCKET, mnt, "--endpoint", ep, "--metadata-ttl", "0",
                    "--cache-dir", os.path.join(run.WORK, "cache")] + extra, env=env)
            mounts.append(mnt)
            other = os.path.join(mnt, f"other-{len(rows)}.txt")
            with open(other, "w") as f:
                f.write("x")
            idle = quantiles(stats_while(other, None))
            target = os.path.join(mnt, "big.bin")
            busy = stats_while(other, lambda: run.sh(["dd", f"if={src}", f"of={target}", "bs=1M", "conv=fsync"]))
            rows.append((name, idle, quantiles(busy), len(busy)))
            run.sh(["fusermount3", "-u", mnt])
            mounts.remove(mnt)
        print(f"\n# stat of another file while {a.size_mib} MiB are written and uploaded ({os.cpu_count()} cores, embedded server)")
        print(f"{'mount':12} {'idle p50':>9} {'idle p99':>9} {'busy p50':>9} {'busy p99':>9} {'busy max':>9} {'stats':>6} {'p99 x idle':>10}")
        for name, idle, b, n in rows:
            print(f"{name:12} {idle[0]:9.2f} {idle[1]:9.2f} {b[0]:9.2f} {b[1]:9.2f} {b[2]:9.1f} {n:6d} {b[1] / idle[1]:10.1f}")
    finally:
        for m in mounts:
            subprocess.run(["fusermount3", "-uz", m])
        srv.terminate()
        shutil.rmtree(run.WORK, ignore_errors=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Memory benchmark: the daemon's peak RSS (VmHWM) under many open files, against its budget.

On a fresh mount with `--cache-size 64M` (the budget for file data in memory: page cache,
prefetch and write buffers): 200 readers, each on its own 8 MiB file, read at once in 1 MiB
chunks; then 64 writers hold a file open each and write 15 MiB into it, interleaved, before all
close. Prints the baseline RSS, the peak of each phase (the peak is reset between phases through
/proc/PID/clear_refs), the RSS once the files are closed, and the peak over the baseline as a
ratio of the budget. The goal: peak <= baseline + budget + 64 MiB.

Usage (as root, from the repo root): python3 bench/memory.py [--readers 200] [--writers 64]
    [--extra "--write-buffer 16M"]
"""
import argparse, os, shlex, subprocess, sys, tempfile, threading, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (shared set-up: server, raw client, mounts)

MIB = 1 << 20


def status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    raise KeyError(field)


def reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


def together(n, work):
    """Runs work(i) on n threads started together; raises the first error."""
    start, errors = threading.Barrier(n), []

    def go(i):
        try:
            start.wait()
            work(i)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--readers", type=int, default=200)
    ap.add_argument("--file-mib", type=int, default=8)
    ap.add_argument("--writers", type=int, default=64)
    ap.add_argument("--write-mib", type=int, default=15)
    ap.add_argument("--cache-size", default="64M")
    ap.add_argument("--extra", default="", help="more s3mount flags")
    ap.add_argument("--wrap", default="", help="run the measured mount under this command (e.g. heaptrack)")
    ap.add_argument("--binary", help="an s3mount binary to measure (default: a fresh release build)")
    a = ap.parse_args()
    if a.binary:
        run.BIN = a.binary
    else:
        run.sh(["cargo", "build", "--release", "--quiet", "--bin", "s3mount"], cwd=run.ROOT)
    run.WORK = tempfile.mkdtemp(prefix="s3mount-mbench.")
    srv = subprocess.Popen([run.BIN, "serve", os.path.join(run.WORK, "store"), "--addr", "127.0.0.1:0", "--bucket", run.BUCKET],
                           stdout=subprocess.PIPE, text=True,
                           env=dict(os.environ, S3MOUNT_SERVE_ACCESS_KEY=run.AK, S3MOUNT_SERVE_SECRET_KEY=run.SK))
    mnt = os.path.join(run.WORK, "mnt")
    os.makedirs(mnt)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=run.AK, AWS_SECRET_ACCESS_KEY=run.SK, HOME=run.WORK)
    env.pop("AWS_CA_BUNDLE", None)
    try:
        ep = srv.stdout.readline().split()[1]
        flags = ["--endpoint", ep, "--cache-dir", os.path.join(run.WORK, "cache")]

        def mount(extra, wrap=()):
            if wrap:
                # In the foreground under a profiler (e.g. heaptrack): wait for the mount.
                subprocess.Popen(list(wrap) + [run.BIN, run.BUCKET, mnt, "-f"] + flags + extra, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for _ in range(300):
                    if os.path.ismount(mnt):
                        break
                    time.sleep(0.1)
            else:
                run.sh([run.BIN, run.BUCKET, mnt] + flags + extra, env=env)
            return int(run.sh(["pgrep", "-n", "-f", f"{run.BIN} {run.BUCKET} {mnt}"]).stdout.split()[0])

        # The files to read, written through a mount with default settings.
        mount([])
        blob = os.urandom(a.file_mib * MIB)
        os.makedirs(os.path.join(mnt, "r"))
        together(16, lambda i: [open(os.path.join(mnt, "r", f"f{j:03}"), "wb").write(blob)
                                for j in range(i, a.readers, 16)])
        run.sh(["fusermount3", "-u", mnt])

        pid = mount(["--cache-size", a.cache_size] + shlex.split(a.extra), shlex.split(a.wrap))
        time.sleep(0.5)
        base = status(pid, "VmRSS")
        rows = [("baseline RSS", base)]

        reset_peak(pid)

        def read(i):
            with open(os.path.join(mnt, "r", f"f{i:03}"), "rb", buffering=0) as f:
                while f.read(MIB):
                    pass

        t = time.perf_counter()
        together(a.readers, read)
        rd_s = time.perf_counter() - t
        rows.append((f"peak, {a.readers} readers", status(pid, "VmHWM")))
        time.sleep(2)
        rows.append(("RSS after they closed", status(pid, "VmRSS")))
        if os.environ.get("MEMBENCH_SMAPS"):
            print("fds", len(os.listdir(f"/proc/{pid}/fd")), "sockets", sum(1 for f in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{f}").startswith("socket")))
            print(open(f"/proc/{pid}/status").read())
            cur, maps = None, []
            for line in open(f"/proc/{pid}/smaps"):
                if not line[0].isupper() or line.split()[0].count("-") == 1 and ":" not in line.split()[0]:
                    cur = line.strip()
                elif line.startswith("Rss:"):
                    maps.append((int(line.split()[1]), cur))
            for kb, m in sorted(maps, reverse=True)[:12]:
                print(kb, m)

        reset_peak(pid)
        os.makedirs(os.path.join(mnt, "w"))
        files = [open(os.path.join(mnt, "w", f"g{i:02}"), "wb", buffering=0) for i in range(a.writers)]
        chunk = os.urandom(MIB)
        t = time.perf_counter()
        for _ in range(a.write_mib):
            for f in files:
                f.write(chunk)
        peak_open = status(pid, "VmHWM")
        together(a.writers, lambda i: files[i].close())
        wr_s = time.perf_counter() - t
        rows.append((f"peak, {a.writers} writers open", peak_open))
        rows.append((f"peak, {a.writers} writers incl. close", status(pid, "VmHWM")))
        time.sleep(2)
        rows.append(("RSS after they closed", status(pid, "VmRSS")))
        run.sh(["fusermount3", "-u", mnt])
        time.sleep(1 if not a.wrap else 5)

        size = a.cache_size.upper().rstrip("B")
        budget_mib = float(size[:-1]) * {"K": 1 / 1024, "M": 1, "G": 1024}[size[-1]] if size[-1] in "KMG" else float(size) / MIB
        print(f"s3mount {a.extra or '(defaults)'} --cache-size {a.cache_size}: "
              f"reads {a.readers * a.file_mib / rd_s:.0f} MiB/s, writes {a.writers * a.write_mib / wr_s:.0f} MiB/s")
        print(f"{'':36} {'MiB':>8} {'over baseline / budget':>24}")
        for name, v in rows:
            over = "" if name == "baseline RSS" else f"{(v - base) / budget_mib:.2f}"
            print(f"{name:36} {v:8.1f} {over:>24}")
        worst = max(v for n, v in rows if n.startswith("peak"))
        verdict = "within" if worst <= base + budget_mib + 64 else "OVER"
        print(f"worst peak {worst:.1f} MiB: {verdict} baseline + budget + 64 MiB ({base + budget_mib + 64:.1f})")
    finally:
        subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
        srv.kill()
        subprocess.run(["rm", "-rf", run.WORK])


if __name__ == "__main__":
    main()

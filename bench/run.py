#!/usr/bin/env python3
"""Read-path benchmark: s3mount vs raw S3 (same SDK, same server, same run) and peers.

Starts the embedded server on loopback, writes a 1 GiB object and a 10,000-key directory, then
measures raw GETs/LIST (bench/rawget.rs) and, on fresh mounts, s3mount, s3fs-fuse and rclone
mount (the peers when installed). Prints a table of figures and ratios to raw.

Usage (as root, from the repo root): python3 bench/run.py [--size-mib 1024] [--keys 10000]
"""
import argparse, os, random, re, shutil, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/s3mount")
RAW = os.path.join(ROOT, "target/release/examples/rawget")
AK, SK, BUCKET = "bench", "bench-secret", "bench"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def raw(*args):
    out = sh([RAW, *map(str, args)], env=ENV).stdout.strip().splitlines()[-1]
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.]+)", out)}


class Mounted:
    """A fresh mount by one tool; unmounts on exit."""

    def __init__(self, tool, mnt, writable=False):
        self.tool, self.mnt, self.pid, self.writable = tool, mnt, None, writable

    def __enter__(self):
        os.makedirs(self.mnt, exist_ok=True)
        # No drop_caches: a fresh mount starts with an empty kernel cache for its files, and the
        # server's own file stays in the OS cache for every tool and for raw alike.
        if self.tool.startswith("s3mount"):
            extra = {"s3mount": [], "s3mount-single": ["--no-multipart"]}[self.tool]
            sh([BIN, BUCKET, self.mnt, "--endpoint", EP] + ([] if self.writable else ["--read-only"]) + extra, env=ENV)
            self.pid = int(sh(["pgrep", "-n", "-f", f"s3mount {BUCKET} {self.mnt}"]).stdout.split()[0])
        elif self.tool == "s3fs":
            pw = os.path.join(WORK, "s3fs.passwd")
            with open(pw, "w") as f:
                f.write(f"{AK}:{SK}\n")
            os.chmod(pw, 0o600)
            sh(["s3fs", BUCKET, self.mnt, "-o", f"url={EP},use_path_request_style,passwd_file={pw},{'rw' if self.writable else 'ro'},parallel_count=8,multipart_size=8"])
        elif self.tool == "rclone":
            env = dict(ENV, RCLONE_CONFIG_B_TYPE="s3", RCLONE_CONFIG_B_PROVIDER="Other",
                       RCLONE_CONFIG_B_ACCESS_KEY_ID=AK, RCLONE_CONFIG_B_SECRET_ACCESS_KEY=SK,
                       RCLONE_CONFIG_B_ENDPOINT=EP, RCLONE_CONFIG_B_FORCE_PATH_STYLE="true")
            mode = ["--vfs-cache-mode", "writes", "--cache-dir", os.path.join(WORK, "rclone-cache")] if self.writable else ["--read-only"]
            sh(["rclone", "mount", f"b:{BUCKET}", self.mnt, "--daemon"] + mode, env=env)
        for _ in range(100):
            if os.path.ismount(self.mnt):
                break
            time.sleep(0.1)
        return self

    def rss_mib(self):
        if not self.pid:
            return None
        with open(f"/proc/{self.pid}/status") as f:
            m = re.search(r"VmHWM:\s+(\d+) kB", f.read())
        return int(m.group(1)) / 1024

    def __exit__(self, *a):
        subprocess.run(["fusermount3", "-u", self.mnt], capture_output=True)
        if os.path.ismount(self.mnt):
            subprocess.run(["umount", "-l", self.mnt], capture_output=True)
        time.sleep(0.5)


def seq_read(path):
    t = time.perf_counter()
    n = 0
    with open(path, "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            n += len(b)
    return n / (1 << 20) / (time.perf_counter() - t)


def random_reads(path, n, conc, size):
    offs = [random.Random(i).randrange(0, size - 4096) // 4096 * 4096 for i in range(n)]
    fd = os.open(path, os.O_RDONLY)
    it = iter(offs)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                o = next(it, None)
            if o is None:
                return
            assert len(os.pread(fd, 4096, o)) == 4096

    t = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(conc)]
    [x.start() for x in ts]
    [x.join() for x in ts]
    os.close(fd)
    return n / (time.perf_counter() - t)


def ls_time(path, want):
    t = time.perf_counter()
    n = len(os.listdir(path))
    dt = time.perf_counter() - t
    assert n == want, f"{path}: {n} entries, want {want}"
    return dt


def main():
    global ENV, EP, WORK
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--keys", type=int, default=10000)
    ap.add_argument("--random-ops", type=int, default=2000)
    ap.add_argument("--conc", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3, help="runs per throughput figure (median)")
    ap.add_argument("--tools", default="s3mount,s3fs,rclone", help="comma-separated; peers run when installed")
    a = ap.parse_args()
    sh(["cargo", "build", "--release", "--quiet", "--bin", "s3mount", "--example", "rawget"], cwd=ROOT)
    WORK = tempfile.mkdtemp(prefix="s3mount-bench.")
    srv = subprocess.Popen([BIN, "serve", os.path.join(WORK, "store"), "--addr", "127.0.0.1:0", "--bucket", BUCKET],
                           stdout=subprocess.PIPE, text=True,
                           env=dict(os.environ, S3MOUNT_SERVE_ACCESS_KEY=AK, S3MOUNT_SERVE_SECRET_KEY=SK))
    try:
        EP = srv.stdout.readline().split()[1]
        ENV = dict(os.environ, BENCH_ENDPOINT=EP, BENCH_ACCESS_KEY=AK, BENCH_SECRET_KEY=SK, BENCH_BUCKET=BUCKET,
                   AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK, HOME=WORK)
        ENV.pop("AWS_CA_BUNDLE", None)  # rclone rejects a custom bundle with its transport
        size = a.size_mib << 20
        raw("populate-big", "big.bin", a.size_mib)
        raw("populate-many", "many/", a.keys)
        r = {}
        # The machine is shared and noisy: throughput figures are medians of --repeat runs.
        med = lambda xs: sorted(xs)[len(xs) // 2]
        r["raw single GET MiB/s"] = med([raw("get-single", "big.bin")["mib_s"] for _ in range(a.repeat)])
        r["raw parallel GET MiB/s"] = med([raw("get-parallel", "big.bin", 8, 8)["mib_s"] for _ in range(a.repeat)])
        r["raw random 4K IOPS"] = raw("random", "big.bin", a.random_ops, 4096, a.conc)["ops_s"]
        r["raw LIST s"] = raw("list", "many/")["seconds"]
        tools = [t for t in a.tools.split(",") if t == "s3mount" or shutil.which(t)]
        res = {}
        for tool in tools:
            mnt = os.path.join(WORK, "mnt-" + tool)
            m = {}
            seqs, rss = [], None
            for _ in range(a.repeat):
                with Mounted(tool, mnt) as mo:
                    seqs.append(seq_read(os.path.join(mnt, "big.bin")))
                    rss = max(rss or 0, mo.rss_mib() or 0) if mo.pid else None
            m["seq MiB/s"] = med(seqs)
            with Mounted(tool, mnt) as mo:
                m["random 4K IOPS"] = random_reads(os.path.join(mnt, "big.bin"), a.random_ops, a.conc, size)
            with Mounted(tool, mnt) as mo:
                m["ls s"] = ls_time(os.path.join(mnt, "many"), a.keys)
                if rss is not None:
                    m["peak RSS MiB"] = max(rss, mo.rss_mib())
            res[tool] = m
        print(f"\n# read benchmark: {a.size_mib} MiB object, {a.keys}-key directory, embedded server on loopback, {os.cpu_count()} cores")
        for k, v in r.items():
            print(f"{k:28} {v:10.1f}")
        print()
        print(f"{'tool':10} {'seq MiB/s':>10} {'x rawpar':>8} {'rand IOPS':>10} {'x raw':>7} {'ls s':>7} {'x LIST':>7} {'RSS MiB':>8}")
        for tool, m in res.items():
            print(f"{tool:10} {m['seq MiB/s']:10.1f} {m['seq MiB/s']/r['raw parallel GET MiB/s']:8.2f} "
                  f"{m['random 4K IOPS']:10.1f} {m['random 4K IOPS']/r['raw random 4K IOPS']:7.2f} "
                  f"{m['ls s']:7.3f} {m['ls s']/r['raw LIST s']:7.2f} {m.get('peak RSS MiB', float('nan')):8.1f}")
    finally:
        srv.terminate()
        shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()

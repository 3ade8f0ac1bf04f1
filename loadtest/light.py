#!/usr/bin/env python3
"""Light load, exactly: CPU per 1,000 requests and context switches per
request at a fixed rate, for nginx and one or more aigw builds, alternating
in one sitting (issue 12's fixed-rate figure, taken apart).

    python3 loadtest/light.py [--mock hyper] [--reps 5] BUILD[,KEY=VALUE...] ...

Each BUILD is an aigw binary; KEY=VALUE pairs go into its [server] table,
e.g. `target/release/aigw,io_driver="epoll"`. Every contender gets the
same mock, 2 workers and oha `-q 200 -c 8 -z 10s --latency-correction`
(compare.py's setup and fixed-rate run). CPU comes from
/proc/PID/task/TID/schedstat (nanoseconds on a CPU, per thread), not from
the 10 ms ticks of /proc/PID/stat, which at 200 req/s count ~25 ticks a run;
--threads prints where it went, thread by thread. Needs oha and nginx.
"""

import argparse
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import compare as C  # noqa: E402


def threads(root):
    """(pid, tid, name) → (ns on a CPU, voluntary switches) for every thread."""
    out = {}
    for pid in C.pids_of(root):
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    s = f.read()
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns = int(f.read().split()[0])
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    vcs = next(int(line.split()[1]) for line in f if line.startswith("voluntary_ctxt_switches"))
            except (OSError, StopIteration):
                continue
            out[(pid, tid, s[s.index("(") + 1:s.rindex(")")])] = (ns, vcs)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("builds", nargs="+", help="aigw binaries, each optionally with ,KEY=VALUE [server] settings")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rate", type=int, default=200)
    ap.add_argument("--conns", type=int, default=8)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--mock", choices=["aigw", "hyper"], default="hyper")
    ap.add_argument("--threads", action="store_true", help="print each run's CPU per thread")
    a = ap.parse_args()
    ns = argparse.Namespace(
        duration=3, reps=1, workers=2, mock_workers=None, mock=a.mock, wrk_threads=2, pin=False, gw_cpus="0",
        mock_cpus="1", client_cpus="1", nginx=C.shutil.which("nginx") or "/usr/sbin/nginx", rate=a.rate,
        rate_conns=a.conns, rate_duration=a.duration, sections="fixed", cpu_conc=32, streams="", stream_pace_ms=20,
        capacity_pace_ms=100, wrk_streams=1000, wrk_streams_duration=15, sat_conns=64, concurrency="1")
    s = C.Setup(ns)
    s.start()
    procs = []
    try:
        names = ["nginx"]
        for i, spec in enumerate(a.builds):
            binary, *extra = spec.split(",")
            port, admin = C.free_port(), C.free_port()
            conf = (s.dir / "aigw.toml").read_text().replace(f"127.0.0.1:{s.aigw_port}", f"127.0.0.1:{port}")
            conf = re.sub(r'admin_listen = "127.0.0.1:\d+"', f'admin_listen = "127.0.0.1:{admin}"', conf)
            conf = conf.replace("[server]\n", "[server]\n" + "".join(e + "\n" for e in extra), 1)
            path = s.dir / f"build{i}.toml"
            path.write_text(conf)
            p = subprocess.Popen([binary, "serve", "--config", str(path)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
            procs.append(p)
            C.wait_port(port)
            name = f"{i}:{os.path.basename(binary)}" + ("," + ",".join(extra) if extra else "")
            names.append(name)
            s.urls[name] = f"http://127.0.0.1:{port}/mock/v1/chat/completions"
            s.pids[name] = p.pid
        time.sleep(1)
        runs = {n: [] for n in names}
        for rep in range(a.reps):
            for n in C.rotated(names, rep):
                before = threads(s.pids[n])
                r = C.oha(s, n, a.rate, a.conns, a.duration)
                after = threads(s.pids[n])
                req = max(r["requests"], 1)
                per = {}
                for k, (t, v) in after.items():
                    t0, v0 = before.get(k, (0, 0))
                    cpu, sw = per.get(k[2], (0, 0))
                    per[k[2]] = (cpu + t - t0, sw + v - v0)
                cpu = sum(t for t, _ in per.values()) / 1e9 / req * 1000
                vcs = sum(v for _, v in per.values()) / req
                runs[n].append((cpu, vcs, r["p50_us"], r["p99_us"]))
                line = f"{n:40} CPU s/1k {cpu:.3f}  switches/req {vcs:.2f}  p50 {r['p50_us']:.0f} µs  p99 {r['p99_us']:.0f} µs"
                if a.threads:
                    line += "  " + " ".join(f"{t}:{c / 1e6:.0f}ms/{v}" for t, (c, v) in sorted(per.items()) if c)
                print(line, flush=True)
        print(f"\nmedians of {a.reps} ({a.rate} req/s, {a.conns} connections, {a.duration} s, {a.mock} mock)")
        base = C.median([x[0] for x in runs["nginx"]])
        for n in names:
            med = [C.median([x[i] for x in runs[n]]) for i in range(4)]
            print(f"{n:40} CPU s/1k {med[0]:.3f} ({med[0] / base:.2f}× nginx)  switches/req {med[1]:.2f}  "
                  f"p50 {med[2]:.0f} µs  p99 {med[3]:.0f} µs")
    finally:
        for p in procs:
            p.kill()
        s.stop()


if __name__ == "__main__":
    main()

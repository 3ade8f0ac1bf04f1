#!/usr/bin/env python3
"""Compare direct-to-mock, nginx and aigw against the same `aigw mock` (or,
with --mock hyper, the tokio/hyper mock in loadtest/hypermock).

Run through loadtest/compare.sh (which builds and checks the tools). One run
measures, alternating contenders and repeating each measurement:

  * added latency at concurrency 1 (p50, p99 minus direct-to-mock, in us);
  * the throughput frontier: most req/s with p99 under 1, 5 and 10 ms and
    unbounded, from one concurrency sweep, and the ratios aigw/nginx;
  * CPU seconds per 1,000 proxied requests;
  * streaming: added time to first token and inter-chunk gap (mock paced at
    20 ms), and the most concurrent paced streams held with no stalled or lost
    chunk;
  * memory: RSS idle, under stream load, and after the load ends;
  * cache hits: aigw answering from its cache vs nginx proxying the same
    request (every request after the first is a hit);
  * access control: the same aigw with a gateway key checked and a
    per-key rate limit (never reached) on every request, vs without;
  * fixed rate, the way the public AI-gateway boards measure light load:
    oha -q 200 -c 8 with latency correction, added p50 / p99 and CPU
    seconds per 1,000 requests;
  * 1,000 paced streams under wrk -c1000 (20 chunks 50 ms apart,
    include_usage): req/s, errors and RSS idle / peak / after;
  * a TLS upstream: the mock behind TLS (nginx terminating it), proxied by
    aigw (rustls) and nginx (OpenSSL): req/s, CPU s/1k, added latency at
    200 req/s, TLS handshakes per 1,000 requests;
  * saturation the way the public boards measure it: wrk -t2 -c64 with the
    chat body and with unpaced streams (16 chunks, include_usage), req/s and
    CPU seconds per 1,000 requests, aigw vs nginx;
  * everything on: gateway key, a rate limit, a budget, the cache (every
    request a miss), analytics and the request log file, vs nginx plain;
  * guardrails: the same aigw with a pii policy (the seven built-in
    detectors, redact on requests and answers) vs without: req/s for plain
    and streamed chat, and the added time to first content on paced streams
    (the live redactor holds back at most a word).

--sections picks a subset (e.g. `--sections cache` for the cache figures
alone).

Every figure is a median over --reps runs. The report goes to stdout and to
loadtest/results/.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# AIGW_BIN: another build to measure (e.g. a saved copy of the previous
# commit, for a before/after in one sitting).
AIGW = Path(os.environ.get("AIGW_BIN", ROOT / "target/release/aigw"))
STREAMLOAD = ROOT / "target/release/examples/streamload"
HYPERMOCK = ROOT / "loadtest/hypermock/target/release/hypermock"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def pids_of(root_pid):
    """root_pid and all its descendants (nginx: master and workers)."""
    pids = [root_pid]
    try:
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        fields = f.read().rsplit(")", 1)[1].split()
                    if int(fields[1]) == root_pid:
                        pids.append(int(entry))
                except OSError:
                    pass
    except OSError:
        pass
    return pids


def cpu_seconds(root_pid):
    """CPU time of a process tree: each thread's nanoseconds on a CPU from
    /proc/PID/task/TID/schedstat (exact; /proc/PID/stat counts 10 ms ticks,
    ~25 of them in a 10 s run at 200 req/s), or the ticks where schedstat
    is missing."""
    total = 0.0
    for pid in pids_of(root_pid):
        try:
            ns = 0
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    ns += int(f.read().split()[0])
            total += ns / 1e9
        except (OSError, ValueError, IndexError):
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / CLK_TCK
            except OSError:
                pass
    return total


def rss_kib(root_pid):
    total = 0
    for pid in pids_of(root_pid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Setup:
    def __init__(self, args):
        self.args = args
        self.dir = Path(tempfile.mkdtemp(prefix="aigw-compare-"))
        self.procs = []

    def pin(self, cpus):
        return ["taskset", "-c", cpus] if self.args.pin and cpus else []

    def spawn(self, cmd, cpus, name):
        log = open(self.dir / f"{name}.log", "w")
        p = subprocess.Popen(self.pin(cpus) + cmd, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append(p)
        return p

    def start(self):
        a = self.args
        self.mock_port = free_port()
        if a.mock == "hyper":
            # The issue-12 method: a tokio/hyper mock (loadtest/hypermock),
            # tokio's default threads unless --mock-workers says otherwise.
            threads = ["--threads", str(a.mock_workers)] if a.mock_workers else []
            cmd = [str(HYPERMOCK), "--listen", f"127.0.0.1:{self.mock_port}"] + threads
        else:
            cmd = [str(AIGW), "mock", "--listen", f"127.0.0.1:{self.mock_port}", "--workers", str(a.mock_workers or 1)]
        self.mock = self.spawn(cmd, a.mock_cpus, "mock")
        wait_port(self.mock_port)

        self.nginx_port, self.tls_port = free_port(), free_port()
        self.make_certs()
        conf = (ROOT / "loadtest/nginx.conf.template").read_text()
        for k, v in {"@WORKERS@": a.workers, "@DIR@": self.dir, "@MOCK_PORT@": self.mock_port, "@PORT@": self.nginx_port,
                     "@TLS_PORT@": self.tls_port}.items():
            conf = conf.replace(k, str(v))
        (self.dir / "nginx.conf").write_text(conf)
        self.nginx = self.spawn([a.nginx, "-c", str(self.dir / "nginx.conf"), "-p", str(self.dir)], a.gw_cpus, "nginx")
        wait_port(self.nginx_port)

        self.aigw_port, admin = free_port(), free_port()
        (self.dir / "aigw.toml").write_text(
            f'[server]\nlisten = "127.0.0.1:{self.aigw_port}"\nadmin_listen = "127.0.0.1:{admin}"\n'
            # pin_workers left at its default ("auto"): unpinned unless
            # --pin narrows the cores with taskset.
            f"workers = {a.workers}\n"
            f'[providers.mock]\nkind = "mock"\nbase_url = "http://127.0.0.1:{self.mock_port}"\n'
            # the same idle pool as nginx's `keepalive 512`
            "pool_max_idle = 512\n"
            # the TLS upstream section: the mock behind nginx's TLS
            f'[providers.mocktls]\nkind = "mock"\nbase_url = "https://localhost:{self.tls_port}"\n'
            f'tls_ca_file = "{self.dir / "ca.crt"}"\npool_max_idle = 512\n'
        )
        self.aigw = self.spawn([str(AIGW), "serve", "--config", str(self.dir / "aigw.toml")], a.gw_cpus, "aigw")
        wait_port(self.aigw_port)
        # The same gateway with per-request accounting off, for its cost.
        self.bare_port, bare_admin = free_port(), free_port()
        (self.dir / "aigw-bare.toml").write_text(
            (self.dir / "aigw.toml").read_text()
            .replace(f"127.0.0.1:{self.aigw_port}", f"127.0.0.1:{self.bare_port}")
            .replace(f"127.0.0.1:{admin}", f"127.0.0.1:{bare_admin}")
            .replace(f"workers = {a.workers}\n", f"workers = {a.workers}\nanalytics = false\n")
        )
        self.bare = self.spawn([str(AIGW), "serve", "--config", str(self.dir / "aigw-bare.toml")], a.gw_cpus, "aigw-bare")
        wait_port(self.bare_port)
        if "access" in self.args.sections.split(","):
            self.start_access(admin)
        if "everything" in self.args.sections.split(","):
            self.start_everything(admin)
        if "guardrails" in self.args.sections.split(","):
            self.start_pii(admin)
        time.sleep(1.0)
        self.urls = {
            "direct": f"http://127.0.0.1:{self.mock_port}/v1/chat/completions",
            "nginx": f"http://127.0.0.1:{self.nginx_port}/mock/v1/chat/completions",
            "aigw": f"http://127.0.0.1:{self.aigw_port}/mock/v1/chat/completions",
            "aigw-no-analytics": f"http://127.0.0.1:{self.bare_port}/mock/v1/chat/completions",
            # Same gateway; chat-cached.lua asks for caching.
            "aigw-cache": f"http://127.0.0.1:{self.aigw_port}/mock/v1/chat/completions",
        }
        if hasattr(self, "access_port"):
            self.urls["aigw-access"] = f"http://127.0.0.1:{self.access_port}/mock/v1/chat/completions"
        if hasattr(self, "all_port"):
            self.urls["aigw-all"] = f"http://127.0.0.1:{self.all_port}/mock/v1/chat/completions"
        if hasattr(self, "pii_port"):
            self.urls["aigw-pii"] = f"http://127.0.0.1:{self.pii_port}/mock/v1/chat/completions"
        self.urls["nginx-tls"] = f"http://127.0.0.1:{self.nginx_port}/mock-tls/v1/chat/completions"
        self.urls["aigw-tls"] = f"http://127.0.0.1:{self.aigw_port}/mocktls/v1/chat/completions"
        self.pids = {"direct": self.mock.pid, "nginx": self.nginx.pid, "aigw": self.aigw.pid,
                     "aigw-no-analytics": self.bare.pid, "aigw-cache": self.aigw.pid}
        if hasattr(self, "access"):
            self.pids["aigw-access"] = self.access.pid
        if hasattr(self, "all"):
            self.pids["aigw-all"] = self.all.pid
        if hasattr(self, "pii"):
            self.pids["aigw-pii"] = self.pii.pid
        self.pids["nginx-tls"], self.pids["aigw-tls"] = self.nginx.pid, self.aigw.pid

    def start_access(self, admin):
        """The same gateway with auth mode "keys" and a per-key limit."""
        keys = self.dir / "keys.toml"
        out = subprocess.run([str(AIGW), "keys", "create", "--file", str(keys), "--name", "loadtest"],
                             capture_output=True, text=True, check=True)
        self.key = out.stdout.strip()
        self.access_port, access_admin = free_port(), free_port()
        (self.dir / "aigw-access.toml").write_text(
            (self.dir / "aigw.toml").read_text()
            .replace(f"127.0.0.1:{self.aigw_port}", f"127.0.0.1:{self.access_port}")
            .replace(f"127.0.0.1:{admin}", f"127.0.0.1:{access_admin}")
            + f'[auth]\nmode = "keys"\nkeys_file = "{keys}"\n'
            + '[[rate_limits]]\nname = "per-key"\nkey = "key"\nlimit = 1000000000\nwindow = "60s"\n'
        )
        self.access = self.spawn([str(AIGW), "serve", "--config", str(self.dir / "aigw-access.toml")],
                                 self.args.gw_cpus, "aigw-access")
        wait_port(self.access_port)

    def make_certs(self):
        """A CA and a leaf for localhost (ECDSA P-256, as the big providers
        serve): rustls, like browsers, refuses a CA certificate as a leaf."""
        d, ec = self.dir, ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        run = lambda *cmd: subprocess.run(["openssl", *cmd], check=True, capture_output=True)
        run("req", "-x509", *ec, "-days", "2", "-subj", "/CN=aigw loadtest CA", "-keyout", str(d / "ca.key"), "-out", str(d / "ca.crt"))
        run("req", *ec, "-subj", "/CN=localhost", "-keyout", str(d / "tls.key"), "-out", str(d / "tls.csr"))
        (d / "leaf.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
        run("x509", "-req", "-in", str(d / "tls.csr"), "-CA", str(d / "ca.crt"), "-CAkey", str(d / "ca.key"),
            "-CAcreateserial", "-days", "2", "-extfile", str(d / "leaf.ext"), "-out", str(d / "tls.crt"))

    def start_everything(self, admin):
        """The same gateway with every feature on: keys with a budget, a
        rate limit, the cache (chat-all.lua makes every request a miss),
        analytics and the request log written to a file."""
        keys = self.dir / "keys-all.toml"
        out = subprocess.run([str(AIGW), "keys", "create", "--file", str(keys), "--name", "everything",
                              "--daily-usd", "1000000"], capture_output=True, text=True, check=True)
        self.all_key = out.stdout.strip()
        self.all_port, all_admin = free_port(), free_port()
        (self.dir / "aigw-all.toml").write_text(
            (self.dir / "aigw.toml").read_text()
            .replace(f"127.0.0.1:{self.aigw_port}", f"127.0.0.1:{self.all_port}")
            .replace(f"127.0.0.1:{admin}", f"127.0.0.1:{all_admin}")
            + f'[auth]\nmode = "keys"\nkeys_file = "{keys}"\n'
            + '[[rate_limits]]\nname = "per-key"\nkey = "key"\nlimit = 1000000000\nwindow = "60s"\n'
            + '[cache]\ndefault_ttl = "5m"\n'
            + f'[log]\npath = "{self.dir / "requests.jsonl"}"\n'
        )
        self.all = self.spawn([str(AIGW), "serve", "--config", str(self.dir / "aigw-all.toml")],
                              self.args.gw_cpus, "aigw-all")
        wait_port(self.all_port)

    def start_pii(self, admin):
        """The same gateway with a pii policy on both directions for every
        request."""
        self.pii_port, pii_admin = free_port(), free_port()
        (self.dir / "aigw-pii.toml").write_text(
            (self.dir / "aigw.toml").read_text()
            .replace(f"127.0.0.1:{self.aigw_port}", f"127.0.0.1:{self.pii_port}")
            .replace(f"127.0.0.1:{admin}", f"127.0.0.1:{pii_admin}")
            .replace(f"workers = {self.args.workers}\n", f'workers = {self.args.workers}\nguardrails = ["pii"]\n')
            + '[guardrails.pii]\ndetectors = ["email", "phone", "credit_card", "iban", "us_ssn", "ip_address", "secret"]\n'
            + 'request = "redact"\nresponse = "redact"\n'
        )
        self.pii = self.spawn([str(AIGW), "serve", "--config", str(self.dir / "aigw-pii.toml")], self.args.gw_cpus, "aigw-pii")
        wait_port(self.pii_port)

    def tls_accepts(self):
        """Connections the TLS front accepted so far (each one a handshake)."""
        with urllib.request.urlopen(f"https://127.0.0.1:{self.tls_port}/status",
                                    context=self.tls_context()) as r:
            return int(r.read().decode().split("\n")[2].split()[0])

    def tls_context(self):
        import ssl
        ctx = ssl.create_default_context(cafile=str(self.dir / "ca.crt"))
        ctx.check_hostname = False
        return ctx

    def stop(self):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def wrk(setup, name, conns, duration, script="chat.lua"):
    a = setup.args
    threads = max(1, min(conns, a.wrk_threads))
    cmd = setup.pin(a.client_cpus) + [
        "wrk", f"-t{threads}", f"-c{conns}", f"-d{duration}s", "--timeout", "5s",
        "-s", str(ROOT / "loadtest" / script), setup.urls[name],
    ]
    key = getattr(setup, "all_key", "") if name == "aigw-all" else getattr(setup, "key", "")
    env = dict(os.environ, AIGW_KEY=key)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    m = re.search(r"RESULT (.*)", out)
    if not m:
        raise RuntimeError(out)
    return {k: float(v) for k, v in (kv.split("=") for kv in m.group(1).split())}


CHAT_BODY = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in five words."}]}'


def oha(setup, name, rate, conns, duration):
    """Fixed-rate load with latency correction (a late request counts from
    when it should have been sent)."""
    cmd = setup.pin(setup.args.client_cpus) + [
        "oha", "-q", str(rate), "-c", str(conns), "-z", f"{duration}s", "--latency-correction", "--no-tui",
        "--output-format", "json", "-m", "POST", "-T", "application/json", "-d", CHAT_BODY, setup.urls[name],
    ]
    d = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)
    lat = d["latencyPercentiles"]
    ok = sum(v for k, v in d["statusCodeDistribution"].items() if k == "200")
    errors = sum(d["errorDistribution"].values()) + sum(v for k, v in d["statusCodeDistribution"].items() if k != "200")
    if errors:
        # What they were: oha's requests still in flight at its deadline
        # are "aborted due to deadline", anything else is worth a look.
        print(f"oha {name}: errors {d['errorDistribution']}, statuses {d['statusCodeDistribution']}", file=sys.stderr)
    return {"p50_us": lat["p50"] * 1e6, "p99_us": lat["p99"] * 1e6, "requests": ok, "errors": errors}


def rotated(names, i):
    return names[i % len(names):] + names[: i % len(names)]


def streamload(setup, name, streams, tokens, delay_ms, ramp_ms):
    url = setup.urls[name].removeprefix("http://")
    addr, path = url.split("/", 1)
    cmd = setup.pin(setup.args.client_cpus) + [str(STREAMLOAD), addr, "/" + path, str(streams), str(tokens), str(delay_ms), "1", str(ramp_ms)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600).stdout
    return json.loads(out.strip().splitlines()[-1])


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    ap.add_argument("--reps", type=int, default=3, help="repeats of every measurement (median reported)")
    ap.add_argument("--concurrency", default="1,4,16,32,64,128,256", help="sweep for the throughput frontier")
    ap.add_argument("--cpu-conc", type=int, default=32, help="concurrency for CPU per 1,000 requests")
    ap.add_argument("--streams", default="1000,10000", help="concurrent paced streams to try")
    ap.add_argument("--stream-pace-ms", type=int, default=20, help="mock pacing for TTFT / gap")
    ap.add_argument("--capacity-pace-ms", type=int, default=100, help="mock pacing for the capacity test")
    ap.add_argument("--workers", type=int, default=1, help="aigw workers = nginx worker_processes")
    ap.add_argument("--mock-workers", type=int, default=None,
                    help="mock threads (default: 1 for aigw mock, tokio's default for --mock hyper)")
    ap.add_argument("--mock", choices=["aigw", "hyper"], default="aigw",
                    help="the upstream: `aigw mock`, or the tokio/hyper mock in loadtest/hypermock (built on first use)")
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--pin", action="store_true", help="pin gateway, mock and client with taskset")
    ap.add_argument("--gw-cpus", default="0", help="cores for aigw / nginx when --pin")
    ap.add_argument("--mock-cpus", default="1", help="cores for the mock when --pin")
    ap.add_argument("--client-cpus", default="1", help="cores for wrk / streamload when --pin")
    ap.add_argument("--nginx", default=shutil.which("nginx") or "/usr/sbin/nginx")
    ap.add_argument("--rate", type=int, default=200, help="req/s for the fixed-rate section (oha -q)")
    ap.add_argument("--rate-conns", type=int, default=8, help="connections for the fixed-rate section (oha -c)")
    ap.add_argument("--rate-duration", type=int, default=10, help="seconds per fixed-rate run")
    ap.add_argument("--wrk-streams", type=int, default=1000, help="connections for the wrk stream section")
    ap.add_argument("--wrk-streams-duration", type=int, default=15)
    ap.add_argument("--sat-conns", type=int, default=64, help="connections for the saturation section (wrk -t2)")
    ap.add_argument("--sections", default="latency,sweep,analytics,streams,capacity,cache,access,fixed,wrkstreams,saturation,tls,everything,guardrails",
                    help="which measurements to run")
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    if args.mock == "hyper" and not HYPERMOCK.exists():
        subprocess.run(["cargo", "build", "--release", "--manifest-path", str(ROOT / "loadtest/hypermock/Cargo.toml")],
                       check=True)

    setup = Setup(args)
    names = ["direct", "nginx", "aigw"]
    report = []

    def say(line=""):
        print(line, flush=True)
        report.append(line)

    try:
        setup.start()
        idle = {n: rss_kib(setup.pids[n]) for n in ("nginx", "aigw")}

        # --- added latency at concurrency 1 ---
        lat = {n: {"p50": [], "p99": []} for n in names}
        for rep in range(args.reps if "latency" in sections else 0):
            for n in rotated(names, rep):
                r = wrk(setup, n, 1, args.duration)
                lat[n]["p50"].append(r["p50_us"])
                lat[n]["p99"].append(r["p99_us"])
        p = {n: {k: median(v) for k, v in lat[n].items()} for n in names}

        # --- throughput sweep, CPU per request ---
        levels = [int(c) for c in args.concurrency.split(",")]
        sweep = {n: {} for n in names}
        cpu = {n: [] for n in ("nginx", "aigw")}
        for ci, c in enumerate(levels if "sweep" in sections else []):
            runs = {n: [] for n in names}
            for rep in range(args.reps):
                for n in rotated(names, ci + rep):
                    before = cpu_seconds(setup.pids[n]) if n in cpu else 0
                    r = wrk(setup, n, c, args.duration)
                    if n in cpu and c == args.cpu_conc and r["requests"] > 0:
                        cpu[n].append((cpu_seconds(setup.pids[n]) - before) / r["requests"] * 1000)
                    runs[n].append(r)
            for n in names:
                sweep[n][c] = {
                    "rps": median([r["rps"] for r in runs[n]]),
                    "p99": median([r["p99_us"] for r in runs[n]]),
                    "errors": sum(r["errors"] for r in runs[n]),
                }

        def frontier(n, bound_us):
            ok = [v["rps"] for v in sweep[n].values() if v["errors"] == 0 and (bound_us is None or v["p99"] < bound_us)]
            return max(ok) if ok else 0.0

        # --- what the tap and analytics cost: same gateway, on vs off ---
        ab = {"aigw": [], "aigw-no-analytics": []}
        for rep in range(max(args.reps, 3) if "analytics" in sections else 0):
            for n in rotated(list(ab), rep):
                ab[n].append(wrk(setup, n, args.cpu_conc, args.duration)["rps"])
        ab_on, ab_off = median(ab["aigw"]), median(ab["aigw-no-analytics"])

        # --- streaming latency (paced) ---
        st = {n: [] for n in names}
        for rep in range(args.reps if "streams" in sections else 0):
            for n in rotated(names, rep):
                # 50 streams started over one second: concurrency ~50, no burst.
                st[n].append(streamload(setup, n, 50, 50, args.stream_pace_ms, 1000))
        sp = {n: {k: median([r[k] for r in st[n]]) for k in ("ttft_p50_us", "ttft_p99_us", "gap_p50_us", "gap_p99_us")} for n in names}

        # --- concurrent stream capacity, memory under load and after ---
        capacity = {}
        for count in [int(s) for s in args.streams.split(",") if s and "capacity" in sections]:
            for n in ("nginx", "aigw"):
                peak = [0]
                stop = threading.Event()

                def sample(pid=setup.pids[n]):
                    while not stop.is_set():
                        peak[0] = max(peak[0], rss_kib(pid))
                        time.sleep(0.1)

                t = threading.Thread(target=sample)
                t.start()
                r = streamload(setup, n, count, 20, args.capacity_pace_ms, max(1000, count // 5))
                stop.set()
                t.join()
                time.sleep(3)
                capacity[(n, count)] = (r, peak[0], rss_kib(setup.pids[n]))

        # --- cache hits vs nginx proxying the same request ---
        cache = {}
        if "cache" in sections:
            check = urllib.request.Request(setup.urls["aigw-cache"], method="POST", headers={
                "Content-Type": "application/json", "x-aigw-cache-ttl": "300"},
                data=b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in five words."}]}')
            for _ in range(2):
                with urllib.request.urlopen(check) as resp:
                    status = resp.headers.get("x-aigw-cache-status")
            if status != "HIT":
                raise RuntimeError(f"chat-cached.lua's request is not a cache hit ({status})")
            for c in sorted({args.cpu_conc, max(levels)}):
                runs = {"nginx": [], "aigw-cache": []}
                cpu_hit = {"nginx": [], "aigw-cache": []}
                for rep in range(args.reps):
                    for n in rotated(list(runs), rep):
                        before = cpu_seconds(setup.pids[n])
                        r = wrk(setup, n, c, args.duration, "chat-cached.lua" if n == "aigw-cache" else "chat.lua")
                        runs[n].append(r)
                        if r["requests"] > 0:
                            cpu_hit[n].append((cpu_seconds(setup.pids[n]) - before) / r["requests"] * 1000)
                cache[c] = {n: {"rps": median([r["rps"] for r in runs[n]]), "p99": median([r["p99_us"] for r in runs[n]]),
                                "errors": sum(r["errors"] for r in runs[n]), "cpu": median(cpu_hit[n])} for n in runs}

        # --- access control on vs off ---
        access = {}
        if "access" in sections:
            access = {"aigw": [], "aigw-access": []}
            for rep in range(max(args.reps, 3)):
                for n in rotated(list(access), rep):
                    r = wrk(setup, n, args.cpu_conc, args.duration, "chat-auth.lua" if n == "aigw-access" else "chat.lua")
                    if r["errors"]:
                        raise RuntimeError(f"{n}: {r['errors']} errors (is the key accepted?)")
                    access[n].append(r["rps"])

        # --- fixed rate (light load), latency-corrected ---
        fixed = {}
        if "fixed" in sections:
            runs = {n: [] for n in names}
            for rep in range(args.reps):
                for n in rotated(names, rep):
                    before = cpu_seconds(setup.pids[n])
                    r = oha(setup, n, args.rate, args.rate_conns, args.rate_duration)
                    r["cpu"] = (cpu_seconds(setup.pids[n]) - before) / max(r["requests"], 1) * 1000
                    runs[n].append(r)
            fixed = {n: {k: median([r[k] for r in runs[n]]) for k in ("p50_us", "p99_us", "cpu")} | {
                "errors": sum(r["errors"] for r in runs[n])} for n in names}

        # --- 1,000 paced streams under wrk ---
        wrk_streams = {}
        if "wrkstreams" in sections:
            runs = {n: [] for n in ("nginx", "aigw")}
            for rep in range(args.reps):
                for n in rotated(list(runs), rep):
                    pid = setup.pids[n]
                    before_idle = rss_kib(pid)
                    peak = [0]
                    stop = threading.Event()

                    def sample(pid=pid):
                        while not stop.is_set():
                            peak[0] = max(peak[0], rss_kib(pid))
                            time.sleep(0.1)

                    t = threading.Thread(target=sample)
                    t.start()
                    saved, setup.args.wrk_threads = setup.args.wrk_threads, 2
                    try:
                        r = wrk(setup, n, args.wrk_streams, args.wrk_streams_duration, "chat-stream-paced.lua")
                    finally:
                        setup.args.wrk_threads = saved
                    stop.set()
                    t.join()
                    time.sleep(3)
                    after3 = rss_kib(pid)
                    time.sleep(7)
                    r.update(idle=before_idle, peak=peak[0], after3=after3, after10=rss_kib(pid))
                    runs[n].append(r)
            wrk_streams = {n: {k: median([r[k] for r in runs[n]]) for k in ("rps", "p99_us", "idle", "peak", "after3", "after10")}
                           | {"errors": sum(r["errors"] for r in runs[n])} for n in runs}

        # --- TLS upstream ---
        tls = {}
        if "tls" in sections:
            pair = ["nginx-tls", "aigw-tls"]
            sat = {n: [] for n in pair}
            for rep in range(args.reps):
                for n in rotated(pair, rep):
                    before, accepts = cpu_seconds(setup.pids[n]), setup.tls_accepts()
                    r = wrk(setup, n, args.cpu_conc, args.duration)
                    r["cpu"] = (cpu_seconds(setup.pids[n]) - before) / max(r["requests"], 1) * 1000
                    # minus the /status request itself
                    r["handshakes"] = (setup.tls_accepts() - accepts - 1) / max(r["requests"], 1) * 1000
                    sat[n].append(r)
            light = {n: [] for n in ["direct"] + pair}
            for rep in range(args.reps):
                for n in rotated(list(light), rep):
                    light[n].append(oha(setup, n, args.rate, args.rate_conns, args.rate_duration))
            tls = {n: {k: median([r[k] for r in sat[n]]) for k in ("rps", "cpu", "handshakes")}
                   | {"errors": sum(r["errors"] for r in sat[n]) + sum(r["errors"] for r in light[n]),
                      "p50_us": median([r["p50_us"] for r in light[n]]), "p99_us": median([r["p99_us"] for r in light[n]])}
                   for n in pair}
            tls["direct"] = {"p50_us": median([r["p50_us"] for r in light["direct"]]),
                             "p99_us": median([r["p99_us"] for r in light["direct"]])}

        # --- saturation, the boards' way: wrk -t2 -c64, chat and unpaced streams ---
        saturation = {}
        if "saturation" in sections:
            pair = ["nginx", "aigw"]
            saved, setup.args.wrk_threads = setup.args.wrk_threads, max(setup.args.wrk_threads, 2)
            try:
                for kind, script in (("chat", "chat.lua"), ("stream", "chat-stream.lua")):
                    runs = {n: [] for n in pair}
                    for rep in range(args.reps):
                        for n in rotated(pair, rep):
                            before = cpu_seconds(setup.pids[n])
                            r = wrk(setup, n, args.sat_conns, args.duration, script)
                            if r["errors"]:
                                raise RuntimeError(f"{n} {script}: {r['errors']} errors")
                            r["cpu"] = (cpu_seconds(setup.pids[n]) - before) / max(r["requests"], 1) * 1000
                            runs[n].append(r)
                    saturation[kind] = {n: {k: median([r[k] for r in runs[n]]) for k in ("rps", "cpu", "p99_us")}
                                        for n in pair}
            finally:
                setup.args.wrk_threads = saved

        # --- everything on vs nginx plain ---
        everything = {}
        if "everything" in sections:
            runs = {n: [] for n in ("nginx", "aigw-all")}
            for rep in range(max(args.reps, 3)):
                for n in rotated(list(runs), rep):
                    before = cpu_seconds(setup.pids[n])
                    r = wrk(setup, n, args.cpu_conc, args.duration, "chat-all.lua" if n == "aigw-all" else "chat.lua")
                    if r["errors"]:
                        raise RuntimeError(f"{n}: {r['errors']} errors (is the key accepted?)")
                    r["cpu"] = (cpu_seconds(setup.pids[n]) - before) / max(r["requests"], 1) * 1000
                    runs[n].append(r)
            everything = {n: {k: median([r[k] for r in runs[n]]) for k in ("rps", "cpu", "p99_us")} for n in runs}

        # --- guardrails: a pii policy on both directions vs none ---
        guard = {}
        if "guardrails" in sections:
            pair = ["aigw", "aigw-pii"]
            for kind, script in (("chat", "chat.lua"), ("stream", "chat-stream.lua")):
                runs = {n: [] for n in pair}
                for rep in range(max(args.reps, 3)):
                    for n in rotated(pair, rep):
                        r = wrk(setup, n, args.cpu_conc, args.duration, script)
                        if r["errors"]:
                            raise RuntimeError(f"{n} {script}: {r['errors']} errors")
                        runs[n].append(r["rps"])
                guard[kind] = {n: median(v) for n, v in runs.items()}
            ttft = {n: [] for n in ["direct"] + pair}
            for rep in range(max(args.reps, 3)):
                for n in rotated(list(ttft), rep):
                    ttft[n].append(streamload(setup, n, 50, 50, args.stream_pace_ms, 1000))
            guard["ttft"] = {n: {k: median([r[k] for r in v]) for k in ("ttft_p50_us", "ttft_p99_us", "gap_p50_us")}
                             for n, v in ttft.items()}

        # --- report ---
        cores = os.cpu_count()
        say(f"# aigw vs nginx vs direct-to-mock — {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
        say()
        say(f"machine: {platform.machine()}, {cores} cores, kernel {platform.release()}; "
            f"workers={args.workers} (aigw workers = nginx worker_processes), mock={args.mock} workers={args.mock_workers or ('default' if args.mock == 'hyper' else 1)}, "
            f"pin={'gw:' + args.gw_cpus + ' mock:' + args.mock_cpus + ' client:' + args.client_cpus if args.pin else 'off'}; "
            f"wrk -t{args.wrk_threads}, {args.duration}s runs, median of {args.reps}")
        say(f"command: loadtest/compare.sh {' '.join(sys.argv[1:])}")
        say()
        if "latency" in sections:
            say("## Added latency at concurrency 1 (non-streaming chat completion)")
            say()
            say("| | p50 µs | p99 µs | added p50 µs | added p99 µs |")
            say("|---|---|---|---|---|")
            for n in names:
                say(f"| {n} | {p[n]['p50']:.0f} | {p[n]['p99']:.0f} | {p[n]['p50'] - p['direct']['p50']:.0f} | {p[n]['p99'] - p['direct']['p99']:.0f} |")
            say()
        if cache:
            say("## Cache hits: aigw answering from its cache vs nginx proxying the same request")
            say()
            say("| concurrency | nginx req/s | aigw hit req/s | **hit / nginx** | nginx p99 µs | aigw hit p99 µs | CPU s per 1k: nginx / aigw hit | errors |")
            say("|---|---|---|---|---|---|---|---|")
            for c, v in cache.items():
                ng, hit = v["nginx"], v["aigw-cache"]
                say(f"| {c} | {ng['rps']:.0f} | {hit['rps']:.0f} | **{hit['rps'] / ng['rps']:.2f}** | {ng['p99']:.0f} | "
                    f"{hit['p99']:.0f} | {ng['cpu']:.3f} / {hit['cpu']:.3f} | {ng['errors'] + hit['errors']} |")
            say()
        if access:
            on, off = median(access["aigw-access"]), median(access["aigw"])
            say(f"Gateway key + per-key rate limit on vs off (c={args.cpu_conc}, median of {max(args.reps, 3)}): "
                f"{on:.0f} vs {off:.0f} req/s, ratio {on / off:.3f} "
                f"(runs on: {', '.join(f'{x:.0f}' for x in access['aigw-access'])}; "
                f"off: {', '.join(f'{x:.0f}' for x in access['aigw'])})")
            say()
        if "sweep" in sections:
            say("## Throughput frontier (req/s)")
            say()
            say("| | p99 < 1 ms | p99 < 5 ms | p99 < 10 ms | unbounded |")
            say("|---|---|---|---|---|")
            bounds = [1000, 5000, 10000, None]
            for n in names:
                say(f"| {n} | " + " | ".join(f"{frontier(n, b):.0f}" for b in bounds) + " |")
            ratios = []
            for b in bounds:
                ng = frontier("nginx", b)
                ratios.append(f"{frontier('aigw', b) / ng:.2f}" if ng else "n/a")
            say("| **aigw / nginx** | " + " | ".join(ratios) + " |")
            say()
            say("Sweep (req/s, p99 µs): " + "; ".join(
                f"c={c}: " + ", ".join(f"{n} {sweep[n][c]['rps']:.0f}/{sweep[n][c]['p99']:.0f}" for n in names) for c in levels))
            say()
            say(f"CPU seconds per 1,000 requests (c={args.cpu_conc}): nginx {median(cpu['nginx']):.3f}, "
                f"aigw {median(cpu['aigw']):.3f}, ratio aigw/nginx {median(cpu['aigw']) / median(cpu['nginx']):.2f}")
            say()
        if "analytics" in sections:
            say(f"Analytics and tap on vs off (c={args.cpu_conc}, median of {max(args.reps, 3)}): "
                f"{ab_on:.0f} vs {ab_off:.0f} req/s, ratio {ab_on / ab_off:.3f}")
            say()
        if "streams" in sections:
            say(f"## Streaming (50 streams × 50 chunks started over 1 s, mock paced at {args.stream_pace_ms} ms)")
            say()
            say("| | TTFT p50 µs | TTFT p99 µs | gap p50 µs | gap p99 µs | added TTFT p50 / p99 µs | added gap p50 / p99 µs |")
            say("|---|---|---|---|---|---|---|")
            d = sp["direct"]
            for n in names:
                s = sp[n]
                say(f"| {n} | {s['ttft_p50_us']:.0f} | {s['ttft_p99_us']:.0f} | {s['gap_p50_us']:.0f} | {s['gap_p99_us']:.0f} | "
                    f"{s['ttft_p50_us'] - d['ttft_p50_us']:.0f} / {s['ttft_p99_us'] - d['ttft_p99_us']:.0f} | "
                    f"{s['gap_p50_us'] - d['gap_p50_us']:.0f} / {s['gap_p99_us'] - d['gap_p99_us']:.0f} |")
            say()
        if fixed:
            d = fixed["direct"]
            say(f"## Fixed rate: oha -q {args.rate} -c {args.rate_conns} -z {args.rate_duration}s --latency-correction "
                f"(median of {args.reps})")
            say()
            say("| | p50 µs | p99 µs | added p50 µs | added p99 µs | CPU s per 1k | errors |")
            say("|---|---|---|---|---|---|---|")
            for n in names:
                f = fixed[n]
                say(f"| {n} | {f['p50_us']:.0f} | {f['p99_us']:.0f} | {f['p50_us'] - d['p50_us']:.0f} | "
                    f"{f['p99_us'] - d['p99_us']:.0f} | {f['cpu']:.3f} | {f['errors']} |")
            say(f"\naigw / nginx: added p99 {(fixed['aigw']['p99_us'] - d['p99_us']) / max(fixed['nginx']['p99_us'] - d['p99_us'], 1):.2f}, "
                f"CPU per 1k {fixed['aigw']['cpu'] / max(fixed['nginx']['cpu'], 1e-9):.2f}")
            say()
        if wrk_streams:
            say(f"## Paced streams under wrk -t2 -c{args.wrk_streams} -d{args.wrk_streams_duration}s "
                "(chat-stream-paced.lua: 20 chunks 50 ms apart, include_usage)")
            say()
            # "idle" is before each run (a later run starts after the one
            # before it); "at start" is the process before any load.
            say("| | req/s | p99 ms | errors | RSS at start MiB | idle MiB | peak MiB | 3 s after MiB | 10 s after MiB "
                "| 10 s after / at start |")
            say("|---|---|---|---|---|---|---|---|---|---|")
            for n, v in wrk_streams.items():
                say(f"| {n} | {v['rps']:.0f} | {v['p99_us'] / 1000:.0f} | {v['errors']} | {idle[n] / 1024:.1f} | "
                    f"{v['idle'] / 1024:.1f} | {v['peak'] / 1024:.1f} | {v['after3'] / 1024:.1f} | "
                    f"{v['after10'] / 1024:.1f} | {v['after10'] / max(idle[n], 1):.2f} |")
            say()
        if tls:
            say(f"## TLS upstream (the mock behind nginx's TLS; c={args.cpu_conc} for req/s, oha -q {args.rate} for latency)")
            say()
            say("| | req/s | CPU s per 1k | handshakes per 1k | p50 µs | p99 µs | added p50 / p99 µs (vs plain direct) | errors |")
            say("|---|---|---|---|---|---|---|---|")
            d = tls["direct"]
            for n in ("nginx-tls", "aigw-tls"):
                v = tls[n]
                say(f"| {n} | {v['rps']:.0f} | {v['cpu']:.3f} | {v['handshakes']:.2f} | {v['p50_us']:.0f} | {v['p99_us']:.0f} | "
                    f"{v['p50_us'] - d['p50_us']:.0f} / {v['p99_us'] - d['p99_us']:.0f} | {v['errors']} |")
            say(f"\naigw / nginx: throughput {tls['aigw-tls']['rps'] / tls['nginx-tls']['rps']:.2f}, "
                f"CPU per request {tls['aigw-tls']['cpu'] / max(tls['nginx-tls']['cpu'], 1e-9):.2f}")
            say()
        if saturation:
            say(f"## Saturation: wrk -t2 -c{args.sat_conns}, median of {args.reps} (bars: chat ≥ 1.1×, stream ≥ 1.25× nginx)")
            say()
            say("| | nginx req/s | aigw req/s | aigw / nginx | nginx CPU s/1k | aigw CPU s/1k | aigw / nginx CPU |")
            say("|---|---|---|---|---|---|---|")
            for kind, v in saturation.items():
                n, a = v["nginx"], v["aigw"]
                say(f"| {kind} | {n['rps']:.0f} | {a['rps']:.0f} | **{a['rps'] / n['rps']:.2f}** | {n['cpu']:.3f} | "
                    f"{a['cpu']:.3f} | {a['cpu'] / max(n['cpu'], 1e-9):.2f} |")
            say()
        if everything:
            a, n = everything["aigw-all"], everything["nginx"]
            say(f"## Everything on (key + budget, rate limit, cache misses, analytics, request log file) vs nginx plain, "
                f"c={args.cpu_conc}, median of {max(args.reps, 3)}")
            say()
            say(f"aigw {a['rps']:.0f} req/s (CPU {a['cpu']:.3f} s/1k, p99 {a['p99_us']:.0f} µs) vs nginx {n['rps']:.0f} "
                f"(CPU {n['cpu']:.3f} s/1k, p99 {n['p99_us']:.0f} µs): **{a['rps'] / n['rps']:.2f}×**")
            say()
        if guard:
            say(f"## Guardrails: a pii policy (seven detectors, redact both ways) vs none, c={args.cpu_conc}, "
                f"median of {max(args.reps, 3)}")
            say()
            say("| | aigw req/s | aigw + pii req/s | ratio (bar ≥ 0.9) |")
            say("|---|---|---|---|")
            for kind in ("chat", "stream"):
                g = guard[kind]
                say(f"| {kind} | {g['aigw']:.0f} | {g['aigw-pii']:.0f} | {g['aigw-pii'] / g['aigw']:.3f} |")
            t = guard["ttft"]
            d = t["direct"]
            say()
            say(f"Time to first content, 50 paced streams ({args.stream_pace_ms} ms between chunks), added over direct "
                f"p50 / p99: aigw {(t['aigw']['ttft_p50_us'] - d['ttft_p50_us']) / 1000:.2f} / "
                f"{(t['aigw']['ttft_p99_us'] - d['ttft_p99_us']) / 1000:.2f} ms, aigw + pii "
                f"{(t['aigw-pii']['ttft_p50_us'] - d['ttft_p50_us']) / 1000:.2f} / "
                f"{(t['aigw-pii']['ttft_p99_us'] - d['ttft_p99_us']) / 1000:.2f} ms "
                f"(bar: the policy adds at most one chunk interval: {args.stream_pace_ms} ms asked of the mock, "
                f"{d['gap_p50_us'] / 1000:.2f} ms measured between chunks direct)")
            say()
        if capacity:
            say(f"## Concurrent paced streams (20 chunks each, {args.capacity_pace_ms} ms apart) and memory")
            say()
            say("| | streams | ok | stalled | lost | errors | RSS idle MiB | RSS peak MiB | RSS after MiB | KiB per stream |")
            say("|---|---|---|---|---|---|---|---|---|---|")
            for (n, count), (r, peak, after) in capacity.items():
                per = (peak - idle[n]) / count if count else 0
                say(f"| {n} | {count} | {r['ok']} | {r['stalled']} | {r['lost']} | {r['errors']} | {idle[n] / 1024:.1f} | "
                    f"{peak / 1024:.1f} | {after / 1024:.1f} | {per:.1f} |")
    finally:
        setup.stop()

    out = ROOT / "loadtest/results"
    out.mkdir(exist_ok=True)
    path = out / f"compare-{datetime.datetime.now():%Y%m%d-%H%M%S}.md"
    path.write_text("\n".join(report) + "\n")
    print(f"\n(report saved to {path.relative_to(ROOT)}; logs in {setup.dir})")


if __name__ == "__main__":
    main()

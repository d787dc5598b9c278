"""keygate soak: mixed traffic at a fixed fraction of measured capacity, per-minute figures
and a plot. Run by ci/soak.sh (which builds and starts the server); see
docs/performance.md.

Traffic, weighted: custom-token issuance 30%, introspection 25%, API-key GET 25%, the
signing service 20%. Beside it: a rotate-now every minute, a revoke every second, and one
approval flow (regenerate requested by alice, approved by bob) every minute.

Environment: BASE, METRICS_URL, ADMIN_KEY, PID, OUT, DURATION (s, 600), CAPACITY_SECONDS
(20), FRACTION (0.8), THREADS (16).
"""
import http.client
import json
import os
import random
import threading
import time
import urllib.parse

BASE = os.environ["BASE"]
METRICS_URL = os.environ.get("METRICS_URL") or BASE + "/metrics"
ADMIN = os.environ["ADMIN_KEY"]
PID = int(os.environ["PID"])
OUT = os.environ["OUT"]
DURATION = int(os.environ.get("DURATION", "600"))
CAPACITY_SECONDS = int(os.environ.get("CAPACITY_SECONDS", "20"))
FRACTION = float(os.environ.get("FRACTION", "0.8"))
THREADS = int(os.environ.get("THREADS", "16"))


def conn_for(url):
    u = urllib.parse.urlparse(url)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=35), u.path or "/"


class Client:
    def __init__(self):
        self.conn, _ = conn_for(BASE)

    def call(self, method, path, key=None, body=None, form=None):
        headers = {}
        if key:
            headers["x-api-key"] = key
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["content-type"] = "application/json"
        if form is not None:
            data = urllib.parse.urlencode(form)
            headers["content-type"] = "application/x-www-form-urlencoded"
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=headers)
                r = self.conn.getresponse()
                raw = r.read()
                try:
                    payload = json.loads(raw) if raw else None
                except ValueError:
                    payload = None
                return r.status, payload
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn, _ = conn_for(BASE)
                if attempt:
                    return 0, None


def setup(c):
    s, _ = c.call("POST", "/api/v1/keys", ADMIN, {"ring": "soak", "algorithm": "ES256"})
    assert s in (201, 409), s
    keys = {}
    for name in ("alice", "bob"):
        c.call("POST", "/api/v1/users", ADMIN,
               {"username": name, "password": "correct horse battery", "role": "super-admin"})
        s, v = c.call("POST", "/api/v1/api-keys", ADMIN,
                      {"name": name + " key", "role": "super-admin", "owner": name})
        assert s == 201, (s, v)
        keys[name] = v["api_key"]
    s, v = c.call("POST", "/api/v1/api-keys", ADMIN, {"name": "reader", "role": "read-only"})
    assert s == 201, (s, v)
    keys["reader"] = v["api_key"]
    keys["reader_id"] = v["id"]
    s, v = c.call("POST", "/api/v1/api-keys", ADMIN, {"name": "gateway", "role": "gateway"})
    keys["gateway"] = v["api_key"]
    return keys


def one_request(c, keys, tokens):
    """One weighted request; returns (kind, status)."""
    x = random.random()
    if x < 0.30:
        s, v = c.call("POST", "/api/v1/auth/token", ADMIN,
                      form={"grant_type": "custom_token", "subject": "svc", "expires_in": "300"})
        if s == 200 and v and len(tokens) < 5000:
            tokens.append(v["access_token"])
        return "issue", s
    if x < 0.55:
        tok = tokens[random.randrange(len(tokens))] if tokens else "x"
        s, _ = c.call("POST", "/api/v1/auth/introspect", keys["gateway"], form={"token": tok})
        return "introspect", s
    if x < 0.80:
        s, _ = c.call("GET", "/api/v1/api-keys/" + keys["reader_id"], keys["reader"])
        return "api-key-get", s
    s, _ = c.call("POST", "/api/v1/keys/soak/sign", ADMIN,
                  {"claims": {"sub": "device"}, "audience": "https://gw.example"})
    return "sign", s


class Recorder:
    def __init__(self):
        self.lock = threading.Lock()
        self.samples = []  # (t, kind, status, latency)

    def add(self, t, kind, status, lat):
        with self.lock:
            self.samples.append((t, kind, status, lat))

    def take(self):
        with self.lock:
            out, self.samples = self.samples, []
        return out


def drive(keys, tokens, rec, stop, rate_per_thread):
    c = Client()
    interval = 1.0 / rate_per_thread if rate_per_thread else 0.0
    nxt = time.monotonic()
    while not stop.is_set():
        start = time.monotonic()
        kind, status = one_request(c, keys, tokens)
        rec.add(start, kind, status, time.monotonic() - start)
        if interval:
            nxt += interval
            delay = nxt - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -1.0:
                nxt = time.monotonic()  # fell behind: do not burst to catch up


def background(keys, tokens, rec, stop):
    c = Client()
    t0 = time.monotonic()
    last_minute = -1
    while not stop.is_set():
        now = time.monotonic()
        if tokens:
            tok = tokens.pop(0) if len(tokens) > 100 else tokens[0]
            s0 = time.monotonic()
            s, _ = c.call("POST", "/api/v1/auth/revoke", None, form={"token": tok})
            rec.add(s0, "revoke", s, time.monotonic() - s0)
        minute = int((now - t0) // 60)
        if minute != last_minute:
            last_minute = minute
            s0 = time.monotonic()
            s, _ = c.call("POST", "/api/v1/keys/soak/rotate", ADMIN, {"immediate": True})
            rec.add(s0, "rotate-now", s, time.monotonic() - s0)
            s0 = time.monotonic()
            s, v = c.call("POST", "/api/v1/keys/soak/regenerate", keys["alice"], {})
            ok = s == 202
            if ok:
                s, v = c.call("POST", "/api/v1/approvals/%s/approve" % v["approval_id"], keys["bob"], {})
                ok = s == 200 and v.get("state") == "executed"
            rec.add(s0, "approval-flow", 200 if ok else (s or 0), time.monotonic() - s0)
        stop.wait(max(0.0, 1.0 - (time.monotonic() - now)))


def metrics():
    conn, path = conn_for(METRICS_URL)
    try:
        conn.request("GET", path)
        text = conn.getresponse().read().decode()
    finally:
        conn.close()
    sessions = 0.0
    for line in text.splitlines():
        if line.startswith("keygate_pkcs11_sessions_open"):
            sessions += float(line.rsplit(" ", 1)[1])
    return sessions


def proc():
    rss = 0
    with open("/proc/%d/status" % PID) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) // 1024
    fds = len(os.listdir("/proc/%d/fd" % PID))
    return rss, fds


def pct(sorted_lat, p):
    if not sorted_lat:
        return 0.0
    i = min(len(sorted_lat) - 1, int(round(p / 100.0 * (len(sorted_lat) - 1))))
    return sorted_lat[i] * 1000.0


def run(keys, rate_per_thread, seconds, per_minute):
    tokens = []
    rec = Recorder()
    stop = threading.Event()
    threads = [threading.Thread(target=drive, args=(keys, tokens, rec, stop, rate_per_thread))
               for _ in range(THREADS)]
    if per_minute:
        threads.append(threading.Thread(target=background, args=(keys, tokens, rec, stop)))
    for t in threads:
        t.start()
    rows = []
    t_start = time.monotonic()
    window = 60 if per_minute else seconds
    minute = 0
    while time.monotonic() - t_start < seconds:
        time.sleep(min(window, seconds - (time.monotonic() - t_start)))
        samples = rec.take()
        minute += 1
        lat = sorted(s[3] for s in samples)
        errors = sum(1 for s in samples if not 200 <= s[2] < 300)
        kinds = {}
        for s in samples:
            if not 200 <= s[2] < 300:
                kinds["%s:%s" % (s[1], s[2])] = kinds.get("%s:%s" % (s[1], s[2]), 0) + 1
        rss, fds = proc()
        row = {"minute": minute, "requests": len(samples), "rate": len(samples) / float(window),
               "errors": errors, "error_kinds": kinds,
               "p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "p999_ms": pct(lat, 99.9),
               "rss_mib": rss, "fds": fds, "hsm_sessions": metrics()}
        rows.append(row)
        if per_minute:
            print(json.dumps(row), flush=True)
    stop.set()
    for t in threads:
        t.join()
    return rows


def plot(rows, capacity, target):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    m = [r["minute"] for r in rows]
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    axes[0].plot(m, [r["p50_ms"] for r in rows], marker="o", label="p50")
    axes[0].plot(m, [r["p99_ms"] for r in rows], marker="o", label="p99")
    axes[0].plot(m, [r["p999_ms"] for r in rows], marker="o", label="p99.9")
    axes[0].set_ylabel("latency (ms)")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[0].set_title("keygate soak: %.0f req/s offered (%.0f%% of %.0f measured), errors %d"
                      % (target, FRACTION * 100, capacity, sum(r["errors"] for r in rows)))
    axes[1].plot(m, [r["rss_mib"] for r in rows], marker="o", color="tab:red", label="RSS (MiB)")
    ax2 = axes[1].twinx()
    ax2.plot(m, [r["fds"] for r in rows], marker="s", color="tab:green", label="open fds")
    axes[1].set_ylabel("RSS (MiB)")
    ax2.set_ylabel("open fds")
    axes[1].legend(loc="upper left")
    ax2.legend(loc="upper right")
    axes[2].bar(m, [r["rate"] for r in rows], color="tab:blue", label="req/s")
    ax3 = axes[2].twinx()
    ax3.plot(m, [r["hsm_sessions"] for r in rows], marker="^", color="black", label="HSM sessions")
    axes[2].set_ylabel("req/s")
    ax3.set_ylabel("HSM sessions")
    axes[2].set_xlabel("minute")
    axes[2].legend(loc="lower left")
    ax3.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(os.path.join(OUT, "soak.png"), dpi=90)


def main():
    c = Client()
    keys = setup(c)
    # Capacity: the same mix, unpaced, THREADS clients.
    cap_rows = run(keys, 0, CAPACITY_SECONDS, per_minute=False)
    capacity = cap_rows[0]["rate"]
    target = FRACTION * capacity
    print(json.dumps({"capacity_rps": capacity, "target_rps": target, "threads": THREADS}), flush=True)
    rows = run(keys, target / THREADS, DURATION, per_minute=True)
    summary = {"capacity_rps": capacity, "target_rps": target, "threads": THREADS,
               "duration_s": DURATION, "errors": sum(r["errors"] for r in rows), "minutes": rows}
    with open(os.path.join(OUT, "soak.json"), "w") as f:
        json.dump(summary, f, indent=1)
    plot(rows, capacity, target)
    print("| minute | req/s | errors | p50 ms | p99 ms | p99.9 ms | RSS MiB | fds | HSM sessions |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %d | %.0f | %d | %.2f | %.2f | %.2f | %d | %d | %d |" % (
            r["minute"], r["rate"], r["errors"], r["p50_ms"], r["p99_ms"], r["p999_ms"],
            r["rss_mib"], r["fds"], r["hsm_sessions"]))
    print("plot: %s" % os.path.join(OUT, "soak.png"))


if __name__ == "__main__":
    main()

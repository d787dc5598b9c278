#!/usr/bin/env python3
"""Revocation propagation delay between two keygate replicas (ci/bench-cluster.sh).

  propagation.py A_BASE B_BASE API_KEY COUNT WORKERS

Each sample: mint a custom token on A, check B accepts it, revoke it on A, then poll B
(GET /api/v1/keys with the token, every 2 ms) until it answers 401. The delay is from A's
200 to the revocation until B's first 401. Prints one JSON object: count, p50/p99/max in
ms, errors. Standard library only; WORKERS samples run at once (one connection pair each).
"""
import http.client
import json
import sys
import threading
import time
import urllib.parse


def conn(base):
    u = urllib.parse.urlsplit(base)
    return http.client.HTTPConnection(u.hostname, u.port, timeout=10)


def call(c, method, path, body=None, headers=None):
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    return r.status, data


def worker(a_base, b_base, key, n, out, errors, lock):
    a, b = conn(a_base), conn(b_base)
    form = {"content-type": "application/x-www-form-urlencoded"}
    for _ in range(n):
        try:
            st, body = call(a, "POST", "/api/v1/auth/token",
                            "grant_type=custom_token&subject=prop&expires_in=300",
                            dict(form, **{"x-api-key": key}))
            if st != 200:
                raise RuntimeError(f"mint {st} {body[:200]!r}")
            token = json.loads(body)["access_token"]
            bearer = {"authorization": f"Bearer {token}"}
            deadline = time.monotonic() + 10
            while True:  # B may not know the token's key binding yet on a fresh start
                st, _ = call(b, "GET", "/api/v1/keys", headers=bearer)
                if st == 200:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"B never accepted the token ({st})")
                time.sleep(0.01)
            st, body = call(a, "POST", "/api/v1/auth/revoke",
                            "token=" + urllib.parse.quote(token), form)
            t0 = time.monotonic()
            if st != 200:
                raise RuntimeError(f"revoke {st}")
            while True:
                st, _ = call(b, "GET", "/api/v1/keys", headers=bearer)
                if st == 401:
                    break
                if time.monotonic() - t0 > 10:
                    raise RuntimeError("B still accepts a token revoked 10 s ago")
                time.sleep(0.002)
            with lock:
                out.append((time.monotonic() - t0) * 1000)
        except Exception as e:  # noqa: BLE001 - counted and reported
            with lock:
                errors.append(str(e))
            a, b = conn(a_base), conn(b_base)


def main():
    a_base, b_base, key, count, workers = sys.argv[1:6]
    count, workers = int(count), int(workers)
    out, errors, lock = [], [], threading.Lock()
    per = [count // workers + (1 if i < count % workers else 0) for i in range(workers)]
    threads = [threading.Thread(target=worker, args=(a_base, b_base, key, n, out, errors, lock))
               for n in per]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.sort()
    pct = lambda p: round(out[min(len(out) - 1, int(p * len(out)))], 1) if out else None
    print(json.dumps({"count": len(out), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                      "max_ms": round(out[-1], 1) if out else None,
                      "errors": len(errors), "first_error": errors[0] if errors else None}))


if __name__ == "__main__":
    main()

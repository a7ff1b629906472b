#!/usr/bin/env python3
"""Helpers for tests/bench/run.sh (Python standard library only).

Subcommands:
  free-port                      print a TCP port the kernel just handed out on 127.0.0.1 (racy, see run.sh)
  cpu PID...                     print utime+stime, in clock ticks, of PIDs and all their descendants
  json-get FILE KEY              print one top-level key of the first JSON line of FILE
  cookie JAR PREFIX              print a Cookie header value with the jar's cookies named PREFIX*
  refresh-cookie HEADERS COOKIE  print COOKIE updated by the Set-Cookie lines of a response's HEADERS
  check-identity BODY JWKS       check what the upstream received (identity headers, signed assertion)
  record OUT ROUND TARGET WRK_OUT CPU0 CPU1 UP0 UP1
                                 turn one wrk run (+ CPU readings) into one JSON line appended to OUT
  report RESULTS CLK_TCK         print the per-round numbers, the median table and the ratio
"""

import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    print(port)


def _children(pid):
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids.extend(int(k) for k in f.read().split())
    except FileNotFoundError:
        return []
    except OSError:
        # Kernels without CONFIG_PROC_CHILDREN: scan /proc for the parent pid.
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    if _stat_fields(int(entry))[1] == pid:
                        kids.append(int(entry))
                except (OSError, ValueError, IndexError):
                    pass
    return kids


def _stat_fields(pid):
    """Fields of /proc/PID/stat after the command name: [state, ppid, ...] (field 3 onwards)."""
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    rest = text[text.rindex(")") + 2:].split()
    return [rest[0], int(rest[1])] + rest[2:]


def cpu_ticks(pid):
    """utime + stime (fields 14 and 15 of /proc/PID/stat) of one process, all its threads."""
    fields = _stat_fields(pid)
    # fields[0] is field 3 (state), so field N is fields[N - 3].
    return int(fields[14 - 3]) + int(fields[15 - 3])


def cpu(pids):
    seen, todo, total = set(), [int(p) for p in pids], 0
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            total += cpu_ticks(pid)
        except (OSError, ValueError):
            continue
        todo.extend(_children(pid))
    print(total)


def json_get(path, key):
    with open(path) as f:
        line = f.readline()
    value = json.loads(line)[key]
    print(value if value is not None else "")


def cookie(jar, prefix):
    pairs = []
    with open(jar) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("#HttpOnly_"):
                line = line[len("#HttpOnly_"):]
            elif not line or line.startswith("#"):
                continue
            parts = line.split("\t")
            if len(parts) >= 7 and parts[5].startswith(prefix) and parts[6]:
                pairs.append(f"{parts[5]}={parts[6]}")
    if not pairs:
        sys.exit(f"no cookie named {prefix}* in {jar}")
    print("; ".join(pairs))


def refresh_cookie(headers_path, cookie_header):
    """What a browser would send next: COOKIE with the response's Set-Cookie values applied."""
    jar = dict(p.split("=", 1) for p in cookie_header.split("; ") if "=" in p)
    with open(headers_path, errors="replace") as f:
        for line in f:
            name, _, value = line.partition(":")
            if name.strip().lower() != "set-cookie":
                continue
            attrs = [a.strip() for a in value.strip().split(";")]
            cname, _, cvalue = attrs[0].partition("=")
            if not cvalue or any(a.lower() == "max-age=0" for a in attrs[1:]):
                jar.pop(cname, None)
            else:
                jar[cname] = cvalue
    if not jar:
        sys.exit("the response deleted every cookie")
    print("; ".join(f"{k}={v}" for k, v in jar.items()))


def _b64url(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _der_int(raw):
    raw = raw.lstrip(b"\x00") or b"\x00"
    if raw[0] & 0x80:
        raw = b"\x00" + raw
    return b"\x02" + bytes([len(raw)]) + raw


def check_identity(body_path, jwks_path):
    """The upstream's /.bench/identity answers `name=value` lines with what it received."""
    with open(body_path) as f:
        seen = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
    expect = {"user": "alice", "email": "alice@example.com", "groups": "eng,admins"}
    for key, want in expect.items():
        if seen.get(key) != want:
            sys.exit(f"upstream received {key}={seen.get(key)!r}, expected {want!r}")
    if "_sekisho" in seen.get("cookie", ""):
        sys.exit(f"the session cookie leaked to the upstream: {seen['cookie']!r}")
    token = seen.get("assertion", "")
    if token.count(".") != 2:
        sys.exit(f"no signed assertion reached the upstream: {token!r}")
    head_b64, claims_b64, sig_b64 = token.split(".")
    header, claims = json.loads(_b64url(head_b64)), json.loads(_b64url(claims_b64))
    if header.get("alg") != "ES256":
        sys.exit(f"assertion alg {header.get('alg')!r}, expected ES256")
    if claims.get("sub") != "alice" or claims.get("aud") not in ("app", ["app"]) or claims.get("exp", 0) <= time.time():
        sys.exit(f"unexpected assertion claims {claims}")
    with open(jwks_path) as f:
        keys = json.load(f)["keys"]
    key = next((k for k in keys if k.get("kid") == header.get("kid")), keys[0] if len(keys) == 1 else None)
    if key is None or key.get("crv") != "P-256":
        sys.exit(f"no P-256 key for kid {header.get('kid')!r} in the proxy's JWKS")
    # SubjectPublicKeyInfo of a P-256 point, so that openssl can verify the signature.
    spki = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200") + b"\x04" + _b64url(key["x"]) + _b64url(key["y"])
    sig = _b64url(sig_b64)
    der_sig = _der_int(sig[:32]) + _der_int(sig[32:])
    der_sig = b"\x30" + bytes([len(der_sig)]) + der_sig
    with tempfile.TemporaryDirectory() as d:
        pem = "-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(spki).decode() + "\n-----END PUBLIC KEY-----\n"
        for name, data in (("pub.pem", pem.encode()), ("sig.der", der_sig), ("data", f"{head_b64}.{claims_b64}".encode())):
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
        result = subprocess.run(
            ["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.der", "data"],
            cwd=d, capture_output=True, text=True,
        )
    if result.returncode != 0:
        sys.exit(f"the assertion's signature does not verify with the proxy's JWKS: {result.stdout}{result.stderr}")
    print(f"upstream received user=alice email=alice@example.com groups=eng,admins, no session cookie, "
          f"and an ES256 assertion (sub={claims['sub']}, aud={claims['aud']}) that verifies with the proxy's JWKS")


def record(out, round_, target, wrk_out, cpu0, cpu1, up0, up1):
    stats = None
    with open(wrk_out) as f:
        for line in f:
            if line.startswith("BENCH "):
                stats = json.loads(line[len("BENCH "):])
    if stats is None:
        sys.exit(f"no BENCH line in wrk output {wrk_out}")
    stats.update(round=int(round_), target=target, cpu_ticks=int(cpu1) - int(cpu0), upstream_ticks=int(up1) - int(up0))
    with open(out, "a") as f:
        f.write(json.dumps(stats) + "\n")
    return stats


def _derive(r, tick):
    n = max(r["requests"], 1)
    secs = r["duration_us"] / 1e6
    errors = sum(r[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeout_errors"))
    return {
        "rps": r["requests"] / secs,
        "p50_ms": r["p50_us"] / 1000,
        "p99_ms": r["p99_us"] / 1000,
        "cpu_us": r["cpu_ticks"] * tick * 1e6 / n,
        "up_us": r["upstream_ticks"] * tick * 1e6 / n,
        "cores": r["cpu_ticks"] * tick / secs,
        "errors": errors,
        "bytes": r["bytes"] / n,
    }


LABELS = {"direct": "direct (upstream)", "nginx": "nginx proxy", "sekisho": "sekisho (auth'd)",
          "strict": "sekisho, strict audit"}


def report(results, clk_tck):
    tick = 1.0 / int(clk_tck)
    runs = [json.loads(line) for line in open(results) if line.strip()]
    print()
    print("per-round raw numbers (CPU = the process(es) under test; for direct, the upstream itself)")
    print(f"{'round':>5}  {'target':<18} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'CPU µs/req':>10} {'upstr µs/req':>12} {'cores used':>10} {'B/resp':>6} {'errors':>6}")
    for r in runs:
        d = _derive(r, tick)
        print(f"{r['round']:>5}  {LABELS[r['target']]:<18} {r['requests']:>9} {d['rps']:>9.0f} {d['p50_ms']:>8.3f} "
              f"{d['p99_ms']:>8.3f} {d['cpu_us']:>10.1f} {d['up_us']:>12.1f} {d['cores']:>10.2f} {d['bytes']:>6.0f} {d['errors']:>6}")
    print()
    medians = {}
    print(f"median over rounds")
    print(f"{'target':<18} {'rounds':>6} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'CPU µs/req':>10} {'upstr µs/req':>12}")
    for target in ("direct", "nginx", "sekisho", "strict"):
        rows = [_derive(r, tick) for r in runs if r["target"] == target]
        if not rows:
            continue
        m = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        medians[target] = m
        print(f"{LABELS[target]:<18} {len(rows):>6} {m['rps']:>9.0f} {m['p50_ms']:>8.3f} {m['p99_ms']:>8.3f} "
              f"{m['cpu_us']:>10.1f} {m['up_us']:>12.1f}")
    print()
    if "sekisho" in medians and "strict" in medians:
        s, t = medians["sekisho"], medians["strict"]
        print(f"audit durability strict vs batched: p50 {t['p50_ms']:.3f} vs {s['p50_ms']:.3f} ms, "
              f"p99 {t['p99_ms']:.3f} vs {s['p99_ms']:.3f} ms (added p99 {t['p99_ms'] - s['p99_ms']:+.3f} ms), "
              f"CPU {t['cpu_us']:.1f} vs {s['cpu_us']:.1f} µs/request")
    bad = [r for r in runs if _derive(r, tick)["errors"]]
    if "nginx" in medians and "sekisho" in medians and medians["nginx"]["cpu_us"] > 0:
        ratio = medians["sekisho"]["cpu_us"] / medians["nginx"]["cpu_us"]
        verdict = "meets" if ratio <= 1.5 else "MISSES"
        print(f"sekisho CPU/request ÷ nginx CPU/request = {medians['sekisho']['cpu_us']:.1f} / "
              f"{medians['nginx']['cpu_us']:.1f} = {ratio:.2f}  → {verdict} the ≤ 1.5 target")
    if bad:
        print(f"INVALID: {len(bad)} run(s) had errors or non-2xx/3xx answers (see the errors column); "
              f"their numbers do not measure proxied requests")
        sys.exit(3)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "free-port":
        free_port()
    elif cmd == "cpu":
        cpu(args)
    elif cmd == "json-get":
        json_get(*args)
    elif cmd == "cookie":
        cookie(*args)
    elif cmd == "refresh-cookie":
        refresh_cookie(*args)
    elif cmd == "check-identity":
        check_identity(*args)
    elif cmd == "record":
        record(*args)
    elif cmd == "report":
        report(*args)
    else:
        sys.exit(f"unknown subcommand {cmd}")


if __name__ == "__main__":
    main()

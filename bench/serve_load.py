#!/usr/bin/env python3
"""Serving under load: many concurrent streaming clients against `gdn2 serve` (issue 13).

    python3 bench/serve_load.py --ckpt CKPT.safetensors [--device cpu|cuda] [--clients 64] [--duration 120]
                                [--slots 64] [--queue 64] [--prompt 16:512] [--output 16:128] [--seed 0]
                                [--procs 8] [--threads N] [--out bench/results/cpu-serve-load.json]

It starts `build/gdn2 serve CKPT --port 0` (or talks to a running server with --url), then:

1. validation before timing: R reference requests (seeded sampling, random prompt and length) are
   answered one at a time on an idle server and their tokens kept; the same request streamed must
   give the same tokens (the stream's `tokens` pieces concatenated);
2. the load: --clients clients (spread over --procs processes, threads inside each) each send
   streamed completions back to back until --duration seconds have passed, with prompt lengths and
   max_tokens drawn uniformly from --prompt and --output; one request in eight is one of the
   reference requests, whose tokens must equal the idle answer bit for bit (the engine's decode step
   is batch-invariant: a request's tokens do not depend on what else runs in the batch);
3. SIGTERM to the server, which must exit 0.

Every request is checked: HTTP 200, well-formed events ending in [DONE], the tokens of the events add
up to usage.completion_tokens, finish_reason "length" with exactly max_tokens tokens or "stop" with
fewer. A request is *failed* if any check fails or the connection breaks, *lost* if it was sent
before the deadline and had no answer when the run ended, *rejected* on 503 (then the client waits
50 ms and sends another). Figures: completed requests, output tokens per second over the load window,
time to first token (send -> first event carrying a token) and time per output token
((last token event - first) / (tokens - 1)), p50 / p99 / max over requests.
Exit status: 0 when every check passed and no request failed, was lost or mismatched; 1 otherwise;
2 on bad usage. The JSON is written to a temporary name and renamed.
"""
import argparse
import http.client
import json
import multiprocessing as mp
import os
import platform
import random
import re
import signal
import subprocess
import sys
import threading
import time

ALPHABET = bytes(range(32, 127))


def parse_range(s, name):
    m = re.fullmatch(r"(\d+):(\d+)", s)
    if not m or int(m.group(1)) < 1 or int(m.group(1)) > int(m.group(2)):
        raise SystemExit(f"serve_load: --{name} {s!r}: expected LO:HI with 1 <= LO <= HI")
    return int(m.group(1)), int(m.group(2))


def make_request(rng, prange, orange):
    n = rng.randint(*prange)
    prompt = bytes(rng.choice(ALPHABET) for _ in range(n)).decode("ascii")
    return dict(prompt=prompt, max_tokens=rng.randint(*orange), temperature=0.8, top_p=0.95,
                seed=rng.randrange(1 << 30), stream=True)


def complete(host, port, body, timeout):
    """One streamed completion. Returns dict(status, tokens, ttft, tpot, t_send, t_end, err, rejected)."""
    t_send = time.perf_counter()
    r = dict(t_send=t_send, tokens=[], ttft=None, tpot=None, err=None, rejected=False, status=None)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("POST", "/v1/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        r["status"] = resp.status
        if resp.status == 503:
            resp.read()
            r["rejected"] = True
            return r
        if resp.status != 200:
            r["err"] = f"HTTP {resp.status}: {resp.read()[:300]!r}"
            return r
        t_first = t_last = None
        usage, finish, done = None, None, False
        for raw in resp:
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if not line:
                continue
            if not line.startswith("data: "):
                r["err"] = f"not an SSE data line: {line[:100]!r}"
                return r
            data = line[6:]
            if data == "[DONE]":
                done = True
                break
            ev = json.loads(data)
            if "error" in ev:
                r["err"] = f"error event: {ev['error']}"
                return r
            ch = ev["choices"][0]
            toks = ch.get("tokens", [])
            if toks:
                now = time.perf_counter()
                if t_first is None:
                    t_first = now
                t_last = now
                r["tokens"].extend(toks)
            if ch.get("finish_reason"):
                finish = ch["finish_reason"]
                usage = ev.get("usage")
        r["t_end"] = time.perf_counter()
        n = len(r["tokens"])
        if not done:
            r["err"] = "the stream ended without [DONE]"
        elif usage is None or usage.get("completion_tokens") != n:
            r["err"] = f"usage {usage} does not match the {n} tokens streamed"
        elif not ((finish == "length" and n == body["max_tokens"]) or (finish == "stop" and n <= body["max_tokens"])):
            r["err"] = f"finish_reason {finish!r} with {n} tokens for max_tokens {body['max_tokens']}"
        if t_first is not None:
            r["ttft"] = t_first - t_send
            if n > 1:
                r["tpot"] = (t_last - t_first) / (n - 1)
        return r
    except Exception as e:  # noqa: BLE001 — a broken connection is a failed request, reported with its cause
        r["err"] = f"{type(e).__name__}: {e}"
        return r
    finally:
        conn.close()


def worker(args):
    """One process: `threads` clients until the deadline; returns their records."""
    host, port, threads, deadline, seed, prange, orange, refs, timeout = args
    out, lock = [], threading.Lock()

    def client(ci):
        rng = random.Random(seed * 1000003 + ci)
        while time.time() < deadline:
            ref = None
            if refs and rng.random() < 0.125:
                ref = rng.randrange(len(refs))
                body = refs[ref]["body"]
            else:
                body = make_request(rng, prange, orange)
            rec = complete(host, port, body, timeout)
            rec["ref"] = ref
            rec["max_tokens"] = body["max_tokens"]
            if ref is not None and rec["err"] is None and not rec["rejected"] and rec["tokens"] != refs[ref]["tokens"]:
                rec["mismatch"] = True
            rec["tokens"] = len(rec["tokens"])
            with lock:
                out.append(rec)
            if rec["rejected"]:
                time.sleep(0.05)

    ts = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    # a thread that does not come back within the timeout after the deadline holds a lost request
    for t in ts:
        t.join(max(0.0, deadline - time.time()) + timeout + 5)
    lost = sum(t.is_alive() for t in ts)
    with lock:
        return out, lost


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))]


def start_server(a):
    cmd = [a.bin, "serve", a.ckpt, "--port", "0", "--slots", str(a.slots), "--queue", str(a.queue),
           "--max-tokens", str(max(256, a.output[1])), "--max-prompt", str(max(4096, a.prompt[1])),
           "--device", a.device]
    if a.threads:
        cmd += ["--threads", str(a.threads)]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    lines = []
    while time.time() - t0 < a.start_timeout:
        line = p.stderr.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"on http://([\d.]+):(\d+) ", line)
        if m:
            # keep draining stderr so the server never blocks on a full pipe
            threading.Thread(target=lambda: [lines.append(x) for x in p.stderr], daemon=True).start()
            return p, m.group(1), int(m.group(2)), lines
    try:
        p.wait(timeout=5)  # stderr at its end: the server is exiting
    except subprocess.TimeoutExpired:
        pass
    if p.poll() is not None:
        raise SystemExit("serve_load: `%s` exited with status %d before it listened:\n%s"
                         % (" ".join(cmd), p.returncode, "".join(lines)))
    p.kill()
    raise SystemExit("serve_load: `%s` did not start within %d s:\n%s" % (" ".join(cmd), a.start_timeout, "".join(lines)))


def git_commit():
    """HEAD's short hash, with "-dirty" when the tree has uncommitted changes to tracked files."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        h = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=here).stdout
        d = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                           cwd=here).stdout
        return (h.strip() + ("-dirty" if d.strip() else "")) or None
    except OSError:
        return None


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def gpu_name():
    """The first GPU's name from nvidia-smi (the serve --device cuda runs), None when there is none."""
    try:
        r = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                           capture_output=True, text=True, timeout=20)
        return r.stdout.splitlines()[0].strip() if r.returncode == 0 and r.stdout.strip() else None
    except (OSError, subprocess.SubprocessError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", help="checkpoint to serve (needed unless --url)")
    ap.add_argument("--url", help="a running server, http://HOST:PORT (then --ckpt, --slots ... are not used)")
    ap.add_argument("--bin", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "gdn2"))
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds of load (120)")
    ap.add_argument("--slots", type=int, default=64)
    ap.add_argument("--queue", type=int, default=64)
    ap.add_argument("--threads", type=int, default=0, help="the server's CPU threads (0: its default)")
    ap.add_argument("--prompt", default="16:512", help="prompt length range in tokens (bytes), LO:HI")
    ap.add_argument("--output", default="16:128", help="max_tokens range, LO:HI")
    ap.add_argument("--refs", type=int, default=8, help="reference requests checked under load (8)")
    ap.add_argument("--procs", type=int, default=0, help="client processes (0: min(8, clients))")
    ap.add_argument("--timeout", type=float, default=300.0, help="per-request socket timeout, s (300)")
    ap.add_argument("--start-timeout", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", help="results JSON")
    a = ap.parse_args()
    a.prompt, a.output = parse_range(a.prompt, "prompt"), parse_range(a.output, "output")
    if a.clients < 1 or a.duration <= 0 or a.refs < 0:
        raise SystemExit("serve_load: --clients >= 1, --duration > 0 and --refs >= 0 expected")
    if not a.url and not a.ckpt:
        raise SystemExit("serve_load: give --ckpt CKPT.safetensors (a checkpoint from `gdn2 train ... -o F`) or --url")
    if a.ckpt and not os.path.exists(a.ckpt):
        raise SystemExit(f"serve_load: --ckpt {a.ckpt}: no such file")

    proc, lines, rc = None, [], None
    load0 = os.getloadavg()
    if a.url:
        m = re.fullmatch(r"http://([^:/]+):(\d+)/?", a.url)
        if not m:
            raise SystemExit(f"serve_load: --url {a.url!r}: expected http://HOST:PORT")
        host, port = m.group(1), int(m.group(2))
    else:
        proc, host, port, lines = start_server(a)
    ok = True
    try:
        c = http.client.HTTPConnection(host, port, timeout=30)
        c.request("GET", "/health")
        health = json.loads(c.getresponse().read())
        c.close()
        print(f"serve_load: server {host}:{port}: {health}", flush=True)

        # 1. references on the idle server, each asked twice (must agree)
        rng = random.Random(a.seed)
        refs = []
        t0 = time.time()
        for i in range(a.refs):
            body = make_request(rng, a.prompt, a.output)
            r1 = complete(host, port, body, a.timeout)
            r2 = complete(host, port, body, a.timeout)
            for r in (r1, r2):
                if r["err"] or r["rejected"]:
                    raise SystemExit(f"serve_load: reference request {i} failed on the idle server: {r['err'] or '503'}")
            if r1["tokens"] != r2["tokens"]:
                raise SystemExit(f"serve_load: reference request {i}: two idle answers differ (not deterministic)")
            refs.append(dict(body=body, tokens=r1["tokens"]))
        print(f"serve_load: {len(refs)} reference requests checked on the idle server ({time.time() - t0:.1f} s)",
              flush=True)

        # 2. the load
        procs = a.procs or min(8, a.clients)
        procs = max(1, min(procs, a.clients))
        per = [a.clients // procs + (1 if i < a.clients % procs else 0) for i in range(procs)]
        t_start = time.time()
        deadline = t_start + a.duration
        jobs = [(host, port, per[i], deadline, a.seed + 1 + i, a.prompt, a.output, refs, a.timeout)
                for i in range(procs)]
        print(f"serve_load: {a.clients} clients in {procs} processes for {a.duration:.0f} s ...", flush=True)
        with mp.get_context("fork").Pool(procs) as pool:
            parts = pool.map(worker, jobs)
        t_end = time.time()
        recs = [r for part, _ in parts for r in part]
        lost = sum(n for _, n in parts)

        done = [r for r in recs if not r["rejected"] and r["err"] is None]
        failed = [r for r in recs if r["err"] is not None]
        rejected = sum(r["rejected"] for r in recs)
        mismatched = sum(bool(r.get("mismatch")) for r in recs)
        ref_checked = sum(r["ref"] is not None for r in done)
        win = t_end - t_start
        out_tokens = sum(r["tokens"] for r in done)
        ttft = [r["ttft"] * 1e3 for r in done if r["ttft"] is not None]
        tpot = [r["tpot"] * 1e3 for r in done if r["tpot"] is not None]
        for r in failed[:10]:
            print(f"serve_load: FAILED request: {r['err']}", file=sys.stderr)
        res = dict(
            program="bench/serve_load.py", commit=git_commit(), machine=platform.node(), cpu=cpu_model(),
            gpu=gpu_name() if a.device == "cuda" else None,
            cpu_count=os.cpu_count(), load_average_start=load0, load_average_end=os.getloadavg(), server=dict(host=host, port=port, health=health, device=a.device,
                                                      slots=a.slots, queue=a.queue, ckpt=a.ckpt, threads=a.threads),
            clients=a.clients, client_processes=procs, duration_s=round(win, 2), prompt_tokens=list(a.prompt),
            max_tokens=list(a.output), sampling="temperature 0.8, top_p 0.95, a seed per request",
            requests=dict(completed=len(done), failed=len(failed), lost=lost, rejected_503=rejected,
                          reference_checked=ref_checked, reference_mismatched=mismatched),
            output_tokens=out_tokens, output_tok_s=round(out_tokens / win, 1), requests_s=round(len(done) / win, 3),
            ttft_ms=dict(p50=pct(ttft, 50), p99=pct(ttft, 99), max=max(ttft) if ttft else None),
            tpot_ms=dict(p50=pct(tpot, 50), p99=pct(tpot, 99), max=max(tpot) if tpot else None),
            failures=[r["err"] for r in failed[:20]])
        ok = not failed and not lost and not mismatched and len(done) > 0
        print("serve_load: %d completed, %d failed, %d lost, %d rejected (503), %d reference checks, %d mismatched; "
              "%.1f output tok/s, %.2f req/s; TTFT p50 %.1f ms p99 %.1f ms; per token p50 %.2f ms p99 %.2f ms"
              % (len(done), len(failed), lost, rejected, ref_checked, mismatched, res["output_tok_s"],
                 res["requests_s"], res["ttft_ms"]["p50"] or 0, res["ttft_ms"]["p99"] or 0,
                 res["tpot_ms"]["p50"] or 0, res["tpot_ms"]["p99"] or 0), flush=True)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = "killed after 120 s"
            print(f"serve_load: server stopped, exit {rc}", flush=True)
            if rc != 0:
                ok = False
                print("".join(lines[-20:]), file=sys.stderr)
    if a.out:
        res["server_exit"] = rc
        res["pass"] = ok
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(res, f, indent=1)
            f.write("\n")
        os.replace(tmp, a.out)
        print(f"serve_load: wrote {a.out}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

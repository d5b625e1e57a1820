#!/usr/bin/env python3
"""A client of redis-py's `Lock`, driven by fencelock's Rust interop tests and benchmark.

It takes the same lock as a fencelock client running at the same time, so a test can
check how the two share a key on the wire (same key, random value, PX ttl).

Modes:
  --mode hold (default): acquire KEY once (waiting up to --acquire-timeout-ms), print
    "acquired <value>", hold --hold-ms, release, print "released <wall clock ms>".
    Used to check that a fencelock waiter notices a release that announces nothing.
  --mode loop: for --duration-ms, acquire KEY (redis-py's own waiting: a retry every
    --sleep-ms), append "<name> enter <seq>" to --log, hold --hold-ms, append
    "<name> exit <seq>", release, rest --rest-ms; then print "done <count>".

Exit status: 0 when everything was done, 1 with a message on stderr otherwise, 2 for
bad arguments.
"""

import argparse
import sys
import time

import redis


def log_line(path, line):
    # One write(2) per line with O_APPEND: lines of concurrent writers never mix.
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--mode", choices=["hold", "loop"], default="hold")
    p.add_argument("--ttl-ms", type=int, default=2000)
    p.add_argument("--hold-ms", type=int, default=0)
    p.add_argument("--rest-ms", type=int, default=0)
    p.add_argument("--sleep-ms", type=int, default=100, help="redis-py's retry interval (its default: 100)")
    p.add_argument("--acquire-timeout-ms", type=int, default=30000)
    p.add_argument("--duration-ms", type=int, default=5000)
    p.add_argument("--log")
    p.add_argument("--name", default="py")
    a = p.parse_args()
    if a.ttl_ms < 1 or a.hold_ms < 0 or a.sleep_ms < 1:
        p.error("--ttl-ms and --sleep-ms must be positive, --hold-ms not negative")
    if a.mode == "loop" and not a.log:
        p.error("--log is required in loop mode")

    r = redis.Redis.from_url(a.url, socket_timeout=5)
    lock = r.lock(a.key, timeout=a.ttl_ms / 1000, sleep=a.sleep_ms / 1000,
                  blocking_timeout=a.acquire_timeout_ms / 1000)
    if a.mode == "hold":
        if not lock.acquire():
            print(f"redis_py_lock: error: could not acquire {a.key!r}", file=sys.stderr)
            return 1
        print(f"acquired {lock.local.token.decode()}", flush=True)
        time.sleep(a.hold_ms / 1000)
        lock.release()
        print(f"released {time.time() * 1000}", flush=True)
        return 0

    end = time.monotonic() + a.duration_ms / 1000
    seq = 0
    while time.monotonic() < end:
        lock.blocking_timeout = max(0.001, end - time.monotonic())
        if not lock.acquire():
            break
        seq += 1
        log_line(a.log, f"{a.name} enter {seq}")
        time.sleep(a.hold_ms / 1000)
        log_line(a.log, f"{a.name} exit {seq}")
        lock.release()
        time.sleep(a.rest_ms / 1000)
    print(f"done {seq}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/python3
"""Progress in a pseudo-terminal: strata generate, backup, restore and verify
--against run with stdout and stderr on a pty (python3 pty module). The test
checks that a progress line was drawn, and replays the output through a
minimal terminal (carriage return, erase-line, newline) to check that the
final screen holds the result and no trace of the progress line, i.e. the
line was cleared before the result printed. -q must draw nothing.

usage: cli_progress_pty_test.py BINDIR"""
import os
import pty
import re
import subprocess
import sys
import tempfile

BIN = sys.argv[1]
failures = []


def run_pty(args):
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(os.path.join(BIN, "strata"), ["strata"] + args)
    out = b""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


def screen(raw):
    """The lines a terminal shows after `raw` (\\r, ESC[K and \\n only)."""
    lines, cur, col = [], [], 0
    i = 0
    while i < len(raw):
        c = raw[i]
        if raw.startswith("\x1b[K", i):
            del cur[col:]
            i += 3
            continue
        if c == "\r":
            col = 0
        elif c == "\n":
            lines.append("".join(cur))
            cur, col = [], 0
        else:
            if col < len(cur):
                cur[col] = c
            else:
                cur.append(c)
            col += 1
        i += 1
    if cur:
        lines.append("".join(cur))
    return lines


PROGRESS = re.compile(r"\d+% \[[#.]+\]")


def check(name, args, result_re, want_progress=True):
    rc, raw = run_pty(args)
    if rc != 0:
        failures.append(f"{name}: exit {rc}: {raw!r}")
        return
    drawn = bool(PROGRESS.search(raw))
    if want_progress and not drawn:
        failures.append(f"{name}: no progress line was drawn on the terminal: {raw[:300]!r}")
    if not want_progress and (drawn or "\x1b[K" in raw):
        failures.append(f"{name}: -q still drew progress: {raw[:300]!r}")
    lines = [l for l in screen(raw) if l.strip()]
    for l in lines:
        if PROGRESS.search(l):
            failures.append(f"{name}: progress left on the screen: {l!r}")
    if not lines or not re.match(result_re, lines[0]):
        failures.append(f"{name}: the screen does not start with the result ({result_re}): {lines[:3]!r}")


with tempfile.TemporaryDirectory(prefix="strata-pty-") as d:
    disk, repo, out = f"{d}/disk.raw", f"{d}/repo", f"{d}/out.raw"
    check("generate", ["generate", "--size", "512M", "--fill", "0.5", disk], r"^generated ")
    subprocess.run([os.path.join(BIN, "strata"), "init", repo], check=True, capture_output=True)
    check("backup", ["backup", "--repo", repo, "--full", "--no-direct", disk], r"^backup [0-9a-f]{32} ")
    check("restore", ["restore", "--repo", repo, out], r"^restored [0-9a-f]{32} ")
    check("verify --against", ["verify", "--repo", repo, "--against", disk], r"^verified ")
    check("restore -q", ["restore", "-q", "--force", "--repo", repo, out], r"^restored ", want_progress=False)

for f in failures:
    print("FAIL:", f)
print("ok" if not failures else f"{len(failures)} failures")
sys.exit(1 if failures else 0)

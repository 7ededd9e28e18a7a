#!/usr/bin/python3
"""Hostile-input campaign against the strata CLI (issue 11).

Drives the real `strata` and `extent-dump` binaries of a build directory with
hostile input and judges every command against the truth it knows (the disk's
bytes at each backup, the undamaged listings, the blocks really written since
a checkpoint, `qemu-img convert -O raw` of a mutated qcow2 image).

Command (as root, from the source tree, after building strata and extent-dump):

    nice -n 10 /usr/bin/python3 bench/hostile_campaign.py --build build/release \\
        --seed 1 --trials 2400 [--only CAT,CAT] [--work DIR] [--report FILE.json]

Standard library only; needs qemu-img and qemu-io (Debian qemu-utils) and, for
the disk-full category, root (it mounts small tmpfs file systems inside its own
temporary directory and unmounts exactly those; no other mount is touched).

Categories (--only takes a comma-separated list):
  flip-archive  byte flips, truncations, zeroed ranges and appended bytes in
                archives (header, frames, index, footer)
  flip-catalog  the same in the repository catalog
  flip-marker   the same in the repository marker file (strata-repository)
  flip-tracker  the same in tracker state: MANIFEST, gen-*.xset, active-*.xset,
                intent-*.log (the latter after `strata scribble --tracker`
                killed with SIGKILL); serialised extent sets through
                `extent-dump --set`
  flip-qcow2    the same in qcow2 metadata (header, extensions, backing name,
                L1, L2, refcount table and blocks, snapshot table and L1s,
                bitmap directory and tables) and truncations; the reference is
                `qemu-img convert -O raw` of the mutated image
  kill9         SIGKILL at a random moment of backup (full, tracker, scan),
                merge (--remove, --fold, --synthetic-full), restore, checkpoint,
                tracker mark, scribble --tracker and repair --apply; then the
                next writer runs and every acknowledged backup must restore
  diskfull      the repository, the restore output or the tracker state on a
                small tmpfs
  concurrency   2-6 backups, merges, restores, verifies, lists and repairs at
                once on one repository, with and without --lock-wait
  flip-journal  the quiesce freeze journal: `strata freeze --exec` killed with
                SIGKILL inside its window (or at a random moment) on an ext4
                file system the campaign loop-mounts itself (--confine), its
                journal damaged, then `strata status` and `strata thaw --all`;
                a file system left frozen after an exit 0 is WRONG
  oddpaths      odd file, directory and --disk names (spaces, newlines,
                non-UTF-8 bytes, leading '-', long names, relative paths,
                symlinks), and directories, FIFOs and devices given as images,
                repositories or outputs

Every judged command gets one class:
  refused   non-zero exit (1 or 2), one error line naming the file      (a) fine
  right     exit 0 and the result is right                              (b) fine
  WRONG     exit 0 but the result is wrong                              (c)
  crash     killed by a signal the campaign did not send                (d)
  hang      did not finish within the timeout                           (e)
  badmsg    failed, but not with one line naming the file (or exit >2)  (f)
and, for the recovery promises (kill -9, disk full, concurrency):
  lost      an acknowledged backup is missing or no longer restores
  leftover  a failed command left its output or temporaries behind
            (after the next writer, for repository temporaries)
  unrecovered  the next writer did not bring the repository back to a state
            `strata verify` accepts
Failing cases are printed with their commands; a shell script of the trial
(fixture commands + trial commands) is written to WORK/failures/.

The seed is printed; a run with the same seed makes the same mutations (kill
timings depend on the machine's speed). Every failing check prints a re-run
line, `--seed S --trial CAT:N`, which runs that one trial again (its fixture
is built from the seed alone).
"""

import argparse
import bisect
import collections
import errno
import hashlib
import json
import os
import random
import re
import shutil
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import time
import traceback

CLASSES = ["refused", "right", "WRONG", "crash", "hang", "badmsg", "lost", "leftover", "unrecovered"]
BAD = {"WRONG", "crash", "hang", "badmsg", "lost", "leftover", "unrecovered"}
WEIGHTS = collections.OrderedDict([
    ("flip-archive", 20), ("flip-catalog", 7), ("flip-marker", 3), ("flip-tracker", 17),
    ("flip-qcow2", 14), ("kill9", 17), ("diskfull", 8), ("concurrency", 6), ("oddpaths", 8),
    ("flip-journal", 5),
])
FIXTURE_EVERY = 40  # trials per fixture before a new one is built (new seeds)


# --------------------------------------------------------------------------
# processes


def b(x):
    return x if isinstance(x, bytes) else os.fsencode(str(x))


def sh_quote(arg):
    """Shell-quotes bytes or str (ANSI-C quoting for anything unprintable)."""
    raw = b(arg)
    if raw and re.fullmatch(rb"[A-Za-z0-9_@%+=:,./-]+", raw):
        return raw.decode()
    if all(32 <= c < 127 for c in raw) and b"'" not in raw:
        return "'" + raw.decode() + "'"
    out = "$'"
    for c in raw:
        if c in (0x27, 0x5C) or not 32 <= c < 127:
            out += "\\x%02x" % c
        else:
            out += chr(c)
    return out + "'"


class Result:
    def __init__(self, argv, rc, out, err, secs, timed_out=False, killed_by_us=False):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err
        self.secs, self.timed_out, self.killed_by_us = secs, timed_out, killed_by_us

    @property
    def ok(self):
        return self.rc == 0 and not self.timed_out

    def json(self):
        return json.loads(self.out.decode("utf-8", "surrogateescape"))

    def errtext(self):
        return self.err.decode("utf-8", "surrogateescape")

    def describe(self):
        what = "timeout" if self.timed_out else ("signal %d" % -self.rc if self.rc < 0 else "exit %d" % self.rc)
        return "%s: %s; stderr: %s" % (" ".join(sh_quote(a) for a in self.argv), what,
                                      self.errtext().strip()[-600:])


class Proc:
    """A started process; finish() waits with a timeout and kills its group."""

    def __init__(self, argv, cwd, stdin=None):
        self.argv = argv
        self.t0 = time.monotonic()
        self.p = subprocess.Popen([b(a) for a in argv], cwd=b(cwd) if cwd else None,
                                  stdin=subprocess.DEVNULL if stdin is None else stdin,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        self.killed = False

    def kill9(self):
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, signal.SIGKILL)
                self.killed = True
            except ProcessLookupError:
                pass

    def finish(self, timeout):
        timed_out = False
        try:
            out, err = self.p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = self.p.communicate()
        rc = self.p.returncode
        killed_by_us = self.killed and rc == -signal.SIGKILL
        res = Result(self.argv, rc, out, err, time.monotonic() - self.t0, timed_out, killed_by_us)
        res.timeout = timeout
        return res


# --------------------------------------------------------------------------
# file content helpers


def content_digest(path, block=65536, pad_to=1):
    """Digest of a file's bytes that does not depend on where its holes are
    (pad_to: the size rounded up to a multiple, the tail reading as zeros)."""
    h = hashlib.sha256()
    fd = os.open(b(path), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        h.update(struct.pack("<Q", (size + pad_to - 1) // pad_to * pad_to))
        pos = 0
        while pos < size:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            hole = os.lseek(fd, d, os.SEEK_HOLE)
            pos = d - d % block
            while pos < hole:
                # trailing zeros are implied (a file's tail short of a block
                # equals the same tail padded with zeros)
                buf = os.pread(fd, min(block, size - pos), pos).rstrip(b"\0")
                if buf:
                    h.update(struct.pack("<Q", pos))
                    h.update(buf)
                pos += block
    finally:
        os.close(fd)
    return h.hexdigest()


def block_map(path, gran):
    """{block index: digest} of the non-zero blocks of size gran."""
    m = {}
    fd = os.open(b(path), os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        pos = 0
        while pos < size:
            try:
                d = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    break
                raise
            hole = os.lseek(fd, d, os.SEEK_HOLE)
            pos = d - d % gran
            while pos < hole:
                buf = os.pread(fd, min(gran, size - pos), pos)
                if buf.count(0) != len(buf):
                    m[pos // gran] = hashlib.sha1(buf).digest()
                pos += gran
    finally:
        os.close(fd)
    return m


def changed_blocks(a_map, b_map):
    return sorted(k for k in set(a_map) | set(b_map) if a_map.get(k) != b_map.get(k))


def uncovered(blocks, gran, runs):
    """Blocks (indices) not inside the union of runs [{"start", "length"}]."""
    starts = [r["start"] for r in runs]
    missing = []
    for k in blocks:
        off = k * gran
        i = bisect.bisect_right(starts, off) - 1
        if i < 0 or not (runs[i]["start"] <= off < runs[i]["start"] + runs[i]["length"]):
            missing.append(k)
    return missing


def same_name(shown, raw):
    """--json shows a name that is not UTF-8 with U+FFFD for its invalid
    bytes (the name itself is stored as given; --disk takes the raw bytes):
    the shown name must be the raw one with exactly those replacements."""
    def norm(x):
        return re.sub("\ufffd+", "\ufffd", x)
    return norm(shown) == norm(b(raw).decode("utf-8", "replace"))


def sparse_copy(src, dst):
    subprocess.run(["cp", "-a", "--sparse=always", b(src), b(dst)], check=True)


def copy_tree(src, dst):
    subprocess.run(["cp", "-a", "--sparse=always", b(src), b(dst)], check=True)


def leftovers(root, patterns=(".partial.", "catalog.tmp.", ".tmp.")):
    found = []
    for dirpath, dirnames, filenames in os.walk(b(root)):
        for f in filenames:
            if any(p.encode() in f for p in patterns):
                found.append(os.path.join(dirpath, f))
    return found


# --------------------------------------------------------------------------
# mutations


def mutate(rng, path, lo, hi, kinds=("bitflip", "byte", "truncate", "zero", "append")):
    """Damages path inside [lo, hi); returns (description, shell command)."""
    size = os.path.getsize(path)
    hi = min(hi, size)
    lo = min(lo, max(hi - 1, 0))
    kind = rng.choice(kinds)
    if size == 0:
        kind = "append"
    if hi <= lo and kind != "append":
        kind = "truncate"
        lo, hi = 0, size
    q = sh_quote(path)
    if kind in ("bitflip", "byte"):
        off = rng.randrange(lo, hi)
        with open(path, "r+b") as f:
            f.seek(off)
            old = f.read(1)[0]
            x = 1 << rng.randrange(8) if kind == "bitflip" else rng.randrange(1, 256)
            f.seek(off)
            f.write(bytes([old ^ x]))
        return ("%s at %d (0x%02x -> 0x%02x)" % (kind, off, old, old ^ x),
                "printf '\\x%02x' | dd of=%s bs=1 seek=%d conv=notrunc status=none" % (old ^ x, q, off))
    if kind == "truncate":
        off = rng.randrange(lo, max(hi, lo + 1)) if hi > lo else 0
        off = min(off, size - 1) if size else 0
        os.truncate(path, off)
        return ("truncate to %d of %d" % (off, size), "truncate -s %d %s" % (off, q))
    if kind == "zero":
        off = rng.randrange(lo, hi)
        n = min(rng.choice([8, 64, 512, 4096]), size - off)
        with open(path, "r+b") as f:
            f.seek(off)
            old = f.read(n)
            if old.count(0) == len(old):  # already zero: flip one byte instead
                f.seek(off)
                f.write(b"\xff")
                return ("byte at %d (0x00 -> 0xff)" % off,
                        "printf '\\xff' | dd of=%s bs=1 seek=%d conv=notrunc status=none" % (q, off))
            f.seek(off)
            f.write(bytes(n))
        return ("zero %d bytes at %d" % (n, off),
                "dd if=/dev/zero of=%s bs=1 seek=%d count=%d conv=notrunc status=none" % (q, off, n))
    n = rng.choice([1, 8, 48, 512, 4096])
    junk = bytes(rng.randrange(256) for _ in range(n))
    with open(path, "ab") as f:
        f.write(junk)
    return ("append %d bytes" % n, "head -c %d /dev/urandom >> %s  # random bytes" % (n, q))


def archive_regions(path):
    data = open(path, "rb").read()
    size = len(data)
    regions = {}
    if size >= 16:
        hs = struct.unpack_from("<H", data, 10)[0]
        regions["header"] = (0, min(max(hs, 8), size))
    if size >= 48:
        index_off = struct.unpack_from("<Q", data, size - 40)[0]
        hs = regions["header"][1]
        if hs < index_off <= size - 48:
            regions["frames"] = (hs, index_off)
            regions["index"] = (index_off, size - 48)
        regions["footer"] = (size - 48, size)
    return regions


def qcow2_regions(path):
    """Metadata regions of a qcow2 file: {kind: [(lo, hi), ...]}."""
    with open(path, "rb") as f:
        data = f.read()
    fsize = len(data)
    r = collections.defaultdict(list)
    (magic, version, bfo, bfs, cbits, vsize, crypt, l1_size, l1_off, rt_off, rt_clusters,
     nb_snap, snap_off) = struct.unpack_from(">IIQIIQIIQQIIQ", data, 0)
    cs = 1 << cbits
    hlen = 72 if version == 2 else struct.unpack_from(">I", data, 100)[0]
    r["header"].append((0, hlen))
    pos = hlen
    bitmap_ext = None
    while pos + 8 <= min(cs, fsize):
        t, ln = struct.unpack_from(">II", data, pos)
        if t == 0x23852875 and ln >= 24:
            bitmap_ext = struct.unpack_from(">IIQQ", data, pos + 8)
        nxt = pos + 8 + ((ln + 7) & ~7)
        if t == 0 or nxt > cs:
            pos += 8
            break
        pos = nxt
    if pos > hlen:
        r["extensions"].append((hlen, pos))
    if bfo and bfs:
        r["backing-name"].append((bfo, bfo + bfs))
    mask = 0x00FFFFFFFFFFFE00
    if l1_size:
        r["l1"].append((l1_off, l1_off + 8 * l1_size))
        for i in range(min(l1_size, (fsize - l1_off) // 8)):
            e = struct.unpack_from(">Q", data, l1_off + 8 * i)[0] & mask
            if e:
                r["l2"].append((e, e + cs))
    if rt_clusters:
        used = 0
        for i in range(rt_clusters * cs // 8):
            if rt_off + 8 * i + 8 > fsize:
                break
            e = struct.unpack_from(">Q", data, rt_off + 8 * i)[0]
            if e:
                used = i + 1
                r["refcount-block"].append((e, e + cs))
        r["refcount-table"].append((rt_off, rt_off + 8 * max(used, 1)))
    p = snap_off
    for _ in range(nb_snap):
        if p + 40 > fsize:
            break
        s_l1_off, s_l1_size, id_len, name_len = struct.unpack_from(">QIHH", data, p)
        extra = struct.unpack_from(">I", data, p + 36)[0]
        ln = 40 + extra + id_len + name_len
        ln = (ln + 7) & ~7
        r["snapshot-table"].append((p, p + ln))
        if s_l1_size:
            r["snapshot-l1"].append((s_l1_off, s_l1_off + 8 * s_l1_size))
        p += ln
    if bitmap_ext:
        nb, _, dsize, doff = bitmap_ext
        r["bitmap-directory"].append((doff, doff + dsize))
        q = doff
        for _ in range(nb):
            if q + 24 > fsize:
                break
            bt_off, bt_size, flags, gbits, name_size, extra = struct.unpack_from(">QIIBBHI", data, q)[:6]
            r["bitmap-table"].append((bt_off, bt_off + 8 * bt_size))
            q += (24 + extra + name_size + 7) & ~7
    return {k: [(lo, min(hi, fsize)) for lo, hi in v if lo < min(hi, fsize)] for k, v in r.items()}


# --------------------------------------------------------------------------
# the campaign


def normalise(err, work):
    """An error line with paths, ids and numbers replaced, for counting kinds."""
    lines = [l for l in err.splitlines() if l.strip() and ": note: " not in l and ": warning: " not in l
             and not l.startswith("Try '")]
    line = lines[0] if lines else ""
    line = line.replace(work, "W")
    line = re.sub(r"W/[^ :]*", "PATH", line)
    line = re.sub(r"[0-9a-f]{32}", "ID", line)
    line = re.sub(r"0x[0-9a-f]+|\b\d+\b", "N", line)
    return line[:160]


class FixtureError(Exception):
    pass


class Campaign:
    def __init__(self, args):
        self.args = args
        self.build = os.path.abspath(args.build)
        self.strata = os.path.join(self.build, "tools", "strata")
        self.dump = os.path.join(self.build, "tools", "extent-dump")
        for exe in (self.strata, self.dump):
            if not os.access(exe, os.X_OK):
                sys.exit("hostile_campaign: %s: not built (build strata and extent-dump first)" % exe)
        base = os.path.abspath(args.work or tempfile.gettempdir())
        self.work = tempfile.mkdtemp(prefix="strata-hostile-", dir=base)
        self.fail_dir = os.path.join(self.work, "failures")
        os.makedirs(self.fail_dir)
        self.counts = collections.defaultdict(collections.Counter)   # cat -> class -> checks
        self.trial_counts = collections.defaultdict(collections.Counter)  # cat -> worst class -> trials
        self.kinds = collections.defaultdict(collections.Counter)   # cat -> kind -> trials
        self.cases = []
        self.notes = collections.Counter()
        self.refusals = collections.defaultdict(collections.Counter)  # cat -> normalised error -> count
        self.kind_counts = collections.defaultdict(lambda: collections.defaultdict(collections.Counter))
        self.fixtures = {}
        self.mounts = []
        self.loop = None  # flip-journal: our own loop-mounted ext4
        self.timeout = args.timeout
        self.durations = collections.defaultdict(lambda: 0.3)  # kill9: longest observed run per op
        self.measured = set()

    def rerun(self, cat, idx):
        return "%s --build %s --seed %d --trial %s:%d" % (
            os.path.relpath(os.path.abspath(sys.argv[0])), self.args.build, self.args.seed, cat, idx)

    # ---- fixtures ----
    def fixture(self, kind, gen, builder):
        key = (kind, gen)
        if key not in self.fixtures:
            for k in [k for k in self.fixtures if k[0] == kind]:
                shutil.rmtree(self.fixtures[k]["dir"], ignore_errors=True)
                del self.fixtures[k]
            d = os.path.join(self.work, "fixture-%s-%d" % (kind, gen))
            os.makedirs(d)
            fx = {"dir": d, "gen": gen,
                  "log": ["# fixture %s %d" % (kind, gen), "mkdir -p %s && cd %s" % (sh_quote(d), sh_quote(d))]}
            rng = random.Random("%d-fixture-%s-%d" % (self.args.seed, kind, gen))
            builder(self, fx, rng)
            self.fixtures[key] = fx
        return self.fixtures[key]

    def fx_run(self, fx, argv, cwd=None, timeout=None, ok=True):
        cwd = cwd or fx["dir"]
        fx["log"].append(" ".join(sh_quote(a) for a in argv))
        r = Proc(argv, cwd).finish(timeout or self.timeout)
        if ok and not r.ok:
            raise FixtureError("fixture command failed: " + r.describe())
        return r

    # ---- tmpfs ----
    def mount_tmpfs(self, path, size):
        os.makedirs(path, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0755" % size, "strata-hostile", path],
                       check=True)
        self.mounts.append(path)

    def umount(self, path):
        if path in self.mounts:
            for _ in range(50):
                if subprocess.run(["umount", path], stderr=subprocess.DEVNULL).returncode == 0:
                    break
                time.sleep(0.1)
            else:
                subprocess.run(["umount", "-l", path])
            self.mounts.remove(path)

    def cleanup(self):
        if self.loop is not None:
            subprocess.run(["fsfreeze", "-u", self.loop["mnt"]], capture_output=True)
        for m in list(self.mounts):
            self.umount(m)
        if self.loop is not None:
            subprocess.run(["losetup", "-d", self.loop["dev"]])
            self.loop = None

    # ---- running ----
    def run(self, cats):
        total = self.args.trials
        wsum = sum(WEIGHTS[c] for c in cats)
        plan = collections.OrderedDict((c, max(1, round(total * WEIGHTS[c] / wsum))) for c in cats)
        print("hostile_campaign: seed %d, %d trials (%s), work %s, strata %s" % (
            self.args.seed, sum(plan.values()), ", ".join("%s %d" % kv for kv in plan.items()),
            self.work, self.strata), flush=True)
        t0 = time.monotonic()
        self.started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        if self.args.trial:
            only_cat, only_idx = self.args.trial
            plan = collections.OrderedDict([(only_cat, only_idx + 1)])
        for cat, n in plan.items():
            fn = CATEGORIES[cat]
            tc = time.monotonic()
            for i in range(n):
                if self.args.trial and i != only_idx:
                    continue
                t = Trial(self, cat, i)
                try:
                    fn(t)
                except FixtureError as e:
                    t.note_bad("badmsg", "fixture", str(e))
                except Exception:
                    t.note_bad("crash", "campaign script", traceback.format_exc()[-1500:])
                finally:
                    t.close()
                if (i + 1) % 25 == 0 or i + 1 == n:
                    print("  %-13s %4d/%d  %s  (%.0f s)" % (cat, i + 1, n, self.summary_line(cat),
                                                           time.monotonic() - tc), flush=True)
            self.write_report(time.monotonic() - t0)
        self.write_report(time.monotonic() - t0)
        self.print_table(time.monotonic() - t0)

    def summary_line(self, cat):
        c = self.counts[cat]
        return " ".join("%s=%d" % (k, c[k]) for k in CLASSES if c[k])

    def write_report(self, secs):
        rep = {
            "seed": self.args.seed, "trials": self.args.trials, "started": self.started, "seconds": round(secs),
            "machine": {"cores": os.cpu_count(), "kernel": os.uname().release},
            "strata": self.strata,
            "checks": {c: dict(v) for c, v in self.counts.items()},
            "trials_by_worst_class": {c: dict(v) for c, v in self.trial_counts.items()},
            "kinds": {c: dict(v) for c, v in self.kinds.items()},
            "checks_by_kind": {c: {k: dict(x) for k, x in v.items()} for c, v in self.kind_counts.items()},
            "notes": dict(self.notes),
            "refusals": {c: dict(v.most_common()) for c, v in self.refusals.items()},
            "cases": self.cases,
        }
        path = self.args.report or os.path.join(self.work, "report.json")
        with open(path, "w") as f:
            json.dump(rep, f, indent=1)

    def print_table(self, secs):
        print("\nseed %d, %.0f s, work %s" % (self.args.seed, secs, self.work))
        hdr = "| category | trials | " + " | ".join(CLASSES) + " |"
        print(hdr)
        print("|" + "---|" * (len(CLASSES) + 2))
        tot = collections.Counter()
        ttot = 0
        for cat in self.counts:
            n = sum(self.trial_counts[cat].values())
            ttot += n
            tot.update(self.counts[cat])
            print("| %s | %d | %s |" % (cat, n, " | ".join(str(self.counts[cat][k]) for k in CLASSES)))
        print("| total | %d | %s |" % (ttot, " | ".join(str(tot[k]) for k in CLASSES)))
        print("\nchecks by kind:")
        for cat, kinds in self.kind_counts.items():
            for k, c in sorted(kinds.items()):
                print("  %-13s %-22s %s" % (cat, k, " ".join("%s=%d" % (x, c[x]) for x in CLASSES if c[x])))
        print("\ntrials by worst class:")
        for cat in self.trial_counts:
            print("  %-13s %s" % (cat, " ".join("%s=%d" % (k, self.trial_counts[cat][k]) for k in CLASSES
                                               if self.trial_counts[cat][k])))
        if self.args.show_refusals:
            for cat, c in self.refusals.items():
                print("\nrefusals in %s (most common):" % cat)
                for msg, n in c.most_common(self.args.show_refusals):
                    print("  %6d  %s" % (n, msg))
        if self.notes:
            print("\nnotes:")
            for k, v in sorted(self.notes.items()):
                print("  %6d  %s" % (v, k))
        bad = [c for c in self.cases]
        print("\n%d bad checks%s" % (len(bad), ":" if bad else ""))
        for c in bad[:200]:
            print("  [%s] %s #%d %s: %s -- %s" % (c["class"], c["category"], c["trial"], c["what"],
                                                 c["detail"][:300], c["command"][:600]))
            print("      re-run: %s" % self.rerun(c["category"], c["trial"]))


class Trial:
    def __init__(self, camp, cat, idx):
        self.camp, self.cat, self.idx = camp, cat, idx
        self.rng = random.Random("%d-%s-%d" % (camp.args.seed, cat, idx))
        self.dir = os.path.join(camp.work, "t-%s-%d" % (cat, idx))
        os.makedirs(self.dir)
        self.log = ["# trial %s #%d (seed %d)" % (cat, idx, camp.args.seed),
                    "mkdir -p %s && cd %s" % (sh_quote(self.dir), sh_quote(self.dir))]
        self.fixture_log = []
        self.classes = collections.Counter()
        self.bad = False
        self.kind = None
        self.major = None  # the kind the summary groups by (default: the first word of kind)

    # paths and commands
    def p(self, *parts):
        return os.path.join(self.dir, *parts)

    def S(self, *args):
        return [self.camp.strata] + list(args)

    def D(self, *args):
        return [self.camp.dump] + list(args)

    def logcmd(self, argv, cwd=None, prefix=""):
        line = prefix + " ".join(sh_quote(a) for a in argv)
        if cwd and cwd != self.dir:
            line = "(cd %s && %s)" % (sh_quote(cwd), line)
        self.log.append(line)

    def run(self, argv, cwd=None, timeout=None):
        self.logcmd(argv, cwd)
        return Proc(argv, cwd or self.dir).finish(timeout or self.camp.timeout)

    def start(self, argv, cwd=None):
        self.logcmd(argv, cwd, prefix="# started in background: ")
        return Proc(argv, cwd or self.dir)

    def use_fixture(self, fx):
        self.fixture_log = fx["log"]

    # judging
    def record(self, cls, what, r=None, detail=""):
        self.classes[cls] += 1
        self.camp.counts[self.cat][cls] += 1
        self.camp.kind_counts[self.cat][self.major or (self.kind or "-").split()[0]][cls] += 1
        if cls == "refused" and r is not None:
            self.camp.refusals[self.cat][normalise(r.errtext(), self.camp.work)] += 1
        if cls in BAD:
            self.bad = True
            case = {"category": self.cat, "trial": self.idx, "kind": self.kind, "class": cls, "what": what,
                    "detail": detail, "command": r.describe() if r else ""}
            self.camp.cases.append(case)
            print("  !! [%s] %s #%d %s: %s %s" % (cls, self.cat, self.idx, what, detail[:300],
                                                 (r.describe()[:500] if r else "")), flush=True)
            print("     re-run: %s" % self.camp.rerun(self.cat, self.idx), flush=True)
        return cls

    def note_bad(self, cls, what, detail):
        return self.record(cls, what, None, detail)

    def failure_class(self, r, names):
        if r.timed_out:
            return "hang", "no exit within %d s" % r.timeout
        if r.rc < 0 and not r.killed_by_us:
            return "crash", "signal %d" % -r.rc
        if r.rc not in (1, 2):
            return "badmsg", "exit status %d" % r.rc
        lines = [l for l in r.errtext().splitlines() if l.strip()]
        errs = [l for l in lines if not (": note: " in l or ": warning: " in l or l.startswith("Try '")
                                          or "recovered after an unclean shutdown" in l)]
        if len(errs) != 1:
            return "badmsg", "%d error lines" % len(errs)
        if names:
            names = [os.fsdecode(b(n)) for n in names]
            if not any(n and n in errs[0] for n in names):
                return "badmsg", "the error names none of %s" % [n[-60:] for n in names]
        return "refused", ""

    def check(self, what, r, names=None, verify=None, fail_class=None):
        """Judges one command. verify() -> (class, detail) for a success."""
        if r.timed_out or (r.rc < 0 and not r.killed_by_us):
            cls, detail = self.failure_class(r, names)
            return self.record(cls, what, r, detail)
        if r.rc == 0:
            if verify is None:
                return self.record("right", what, r)
            try:
                cls, detail = verify()
            except (ValueError, KeyError, IndexError, TypeError, OSError) as e:
                cls, detail = "WRONG", "exit 0 but the output is unusable: %r" % e
            return self.record(cls, what, r, detail)
        cls, detail = self.failure_class(r, names)
        if cls == "refused" and fail_class:
            return self.record(fail_class, what, r, "failed where it must succeed")
        return self.record(cls, what, r, detail)

    def restore_check(self, what, repo, bid, truth, names=None, fail_class=None, extra=(), out=None):
        """Restores bid and compares with the truth digest."""
        out = out or self.p("restore-%s-%d.raw" % (bid[:8], self.rng.randrange(1 << 30)))
        r = self.run(self.S("restore", "--repo", repo, "--backup", bid, *extra, out))

        def verify():
            if not os.path.exists(out):
                return "WRONG", "exit 0 but no output"
            d = content_digest(out)
            return ("right", "") if d == truth else ("WRONG", "restored bytes differ from the disk at backup %s" % bid)
        cls = self.check(what, r, names, verify, fail_class=fail_class)
        if r.rc > 0 and os.path.lexists(out):
            self.record("leftover", what + " (output of a failed restore)", r, out)
        if os.path.lexists(out) and not os.path.isdir(out):
            os.unlink(out)
        return cls

    def close(self):
        worst = "right" if not self.classes else None
        for c in ["WRONG", "lost", "crash", "hang", "unrecovered", "badmsg", "leftover", "refused", "right"]:
            if self.classes[c]:
                worst = c
                break
        self.camp.trial_counts[self.cat][worst] += 1
        self.camp.kinds[self.cat][self.kind or "-"] += 1
        if self.bad:
            path = os.path.join(self.camp.fail_dir, "%s-%d.sh" % (self.cat, self.idx))
            with open(path, "w") as f:
                f.write("#!/bin/bash\n# reproducer (unshrunk) of trial %s #%d, seed %d\n" % (
                    self.cat, self.idx, self.camp.args.seed))
                f.write("S=%s; D=%s\n" % (self.camp.strata, self.camp.dump))
                for line in self.fixture_log + self.log:
                    f.write(line.replace(self.camp.strata, "$S").replace(self.camp.dump, "$D") + "\n")
            for c in self.camp.cases:
                if c["category"] == self.cat and c["trial"] == self.idx:
                    c["reproducer"] = path
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


# --------------------------------------------------------------------------
# fixtures


def json_id(r):
    return r.json()["id"]


def build_repo_fixture(camp, fx, rng):
    """A repository with a raw disk (full, two tracker incrementals, a scan),
    a qcow2 disk, a synthetic full and optionally a merged archive."""
    d = fx["dir"]
    S = camp.strata
    fx["disk"] = os.path.join(d, "d1.raw")
    fx["repo"] = os.path.join(d, "repo")
    fx["tracker"] = os.path.join(d, "t1")
    fx["truth"] = {}
    size = rng.choice(["8M", "16M", "24M"])
    gran = rng.choice(["4K", "64K", "64K", "1M"])
    camp.fx_run(fx, [S, "generate", "--size", size, "--fill", str(rng.choice([0.2, 0.4])),
                     "--seed", str(rng.randrange(1 << 30)), fx["disk"]])
    camp.fx_run(fx, [S, "init", fx["repo"]])
    camp.fx_run(fx, [S, "tracker", "init", "--tracker", fx["tracker"], "--size", size, "--granularity", gran])
    chunk = rng.choice(["64K", "256K", "1M"])
    ids = []
    r = camp.fx_run(fx, [S, "backup", "--repo", fx["repo"], "--full", "--tracker", fx["tracker"],
                         "--granularity", gran, "--chunk-size", chunk, "--json", fx["disk"]])
    ids.append(json_id(r))
    fx["truth"][ids[-1]] = content_digest(fx["disk"])
    for step in range(2):
        camp.fx_run(fx, [S, "scribble", "--tracker", fx["tracker"], "--bytes", "512K", "--block", "4K" if gran == "4K" else "64K",
                         "--seed", str(rng.randrange(1 << 30)), fx["disk"]])
        r = camp.fx_run(fx, [S, "backup", "--repo", fx["repo"], "--tracker", fx["tracker"], "--chunk-size", chunk,
                             "--json", fx["disk"]])
        ids.append(json_id(r))
        fx["truth"][ids[-1]] = content_digest(fx["disk"])
    camp.fx_run(fx, [S, "scribble", "--bytes", "256K", "--seed", str(rng.randrange(1 << 30)), fx["disk"]])
    r = camp.fx_run(fx, [S, "backup", "--repo", fx["repo"], "--scan", "--json", fx["disk"]])
    ids.append(json_id(r))
    fx["truth"][ids[-1]] = content_digest(fx["disk"])
    # a qcow2 disk
    q_raw = os.path.join(d, "q.raw")
    fx["qcow2"] = os.path.join(d, "d2.qcow2")
    camp.fx_run(fx, [S, "generate", "--size", "4M", "--fill", "0.5", "--seed", str(rng.randrange(1 << 30)), q_raw])
    camp.fx_run(fx, ["qemu-img", "convert", "-O", "qcow2", q_raw, fx["qcow2"]])
    r = camp.fx_run(fx, [S, "backup", "--repo", fx["repo"], "--full", "--format", "qcow2", "--disk", "vm2",
                         "--json", fx["qcow2"]])
    ids.append(json_id(r))
    fx["truth"][ids[-1]] = content_digest(q_raw)
    # a synthetic full of the second tracker backup, and maybe a merge
    r = camp.fx_run(fx, [S, "merge", "--repo", fx["repo"], "--synthetic-full", ids[2], "--json"])
    sid = json_id(r)
    fx["truth"][sid] = fx["truth"][ids[2]]
    if rng.random() < 0.5:
        camp.fx_run(fx, [S, "merge", "--repo", fx["repo"], "--remove", ids[1]])
        del fx["truth"][ids[1]]
    r = camp.fx_run(fx, [S, "list", "--repo", fx["repo"], "--json"])
    fx["list"] = r.json()
    fx["ids"] = [e["id"] for e in fx["list"]]
    fx["parents"] = {e["id"]: e["parent"] for e in fx["list"]}
    fx["info"], fx["dump"] = {}, {}
    for i in fx["ids"]:
        a = os.path.join(fx["repo"], "archives", i + ".sar")
        r = camp.fx_run(fx, [S, "info", "--json", a])
        j = r.json()
        j.pop("path", None)
        fx["info"][i] = j
        r = camp.fx_run(fx, [camp.dump, "--output", "json", a])
        fx["dump"][i] = r.out


def chain_of(fx, bid):
    out = []
    while bid:
        out.append(bid)
        bid = fx["parents"].get(bid)
    return out


def trial_repo_copy(t, fx):
    t.use_fixture(fx)
    repo = t.p("repo")
    copy_tree(fx["repo"], repo)
    t.log.append("cp -a %s %s" % (sh_quote(fx["repo"]), sh_quote(repo)))
    return repo


def same_list(a, b):
    strip = lambda l: sorted(json.dumps(e, sort_keys=True) for e in l)
    return strip(a) == strip(b)


def list_check(t, what, repo, fx, names):
    r = t.run(t.S("list", "--repo", repo, "--json"))

    def verify():
        try:
            got = r.json()
        except ValueError:
            return "WRONG", "list --json printed no JSON"
        return ("right", "") if same_list(got, fx["list"]) else ("WRONG", "listing differs from the undamaged one")
    return t.check(what, r, names, verify)


# ---- flip-archive, flip-catalog, flip-marker ----


def cat_flip_archive(t):
    fx = t.camp.fixture("repo", t.idx // FIXTURE_EVERY, build_repo_fixture)
    repo = trial_repo_copy(t, fx)
    rng = t.rng
    bid = rng.choice(fx["ids"])
    path = os.path.join(repo, "archives", bid + ".sar")
    regions = archive_regions(path)
    region = rng.choice(sorted(regions))
    lo, hi = regions[region]
    kinds = ("bitflip", "byte", "truncate", "zero", "append") if region in ("footer", "index") else \
        ("bitflip", "byte", "byte", "truncate", "zero")
    desc, cmd = mutate(rng, path, lo, hi, kinds)
    t.kind = "archive " + region + " " + desc.split()[0]
    t.major = region
    t.log.append(cmd + "  # " + desc)
    names = [bid]
    # info and extent-dump of the archive itself
    r = t.run(t.S("info", "--json", path))

    def v_info():
        j = r.json()
        j.pop("path", None)
        return ("right", "") if j == fx["info"][bid] else ("WRONG", "info differs from the undamaged archive")
    t.check("info", r, names, v_info)
    r2 = t.run(t.D("--output", "json", path))
    with open(path, "rb") as f:
        magic_ok = f.read(8) == b"STRATAAR"

    def v_dump():
        if r2.out == fx["dump"][bid]:
            return "right", ""
        if not magic_ok and all("depth" in e for e in json.loads(r2.out)):
            # without an archive's magic the file is an image like any other:
            # extent-dump prints its map as a raw image (documented probing)
            return "right", ""
        return "WRONG", "extent-dump differs from the undamaged archive"
    t.check("extent-dump", r2, names, v_dump)
    # verify must not pass a damaged archive
    r3 = t.run(t.S("verify", "--repo", repo))
    t.check("verify", r3, names, lambda: ("WRONG", "verify passed a damaged archive (%s)" % desc))
    # restores of every backup whose chain holds it (and one other)
    affected = [i for i in fx["ids"] if bid in chain_of(fx, i)]
    others = [i for i in fx["ids"] if i not in affected]
    for i in affected + rng.sample(others, min(1, len(others))):
        t.restore_check("restore %s" % ("affected" if i in affected else "unaffected"), repo, i, fx["truth"][i], names)
    list_check(t, "list", repo, fx, names)
    extra = {}
    if rng.random() < 0.3:
        # a new --scan incremental on the damaged chain
        r4 = t.run(t.S("backup", "--repo", repo, "--scan", "--json", fx["disk"]))
        new = {}

        def v_scan():
            new["id"] = json_id(r4)
            return "right", ""
        t.check("backup --scan", r4, names, v_scan)
        if "id" in new:
            dg = content_digest(fx["disk"])
            t.restore_check("restore of the new scan", repo, new["id"], dg, names)
            extra[new["id"]] = (r4.json(), dg)
    if rng.random() < 0.35:
        repair_and_check(t, repo, fx, names, damaged_archive=bid, extra=extra)


def judge_repair(t, what, r, names, catalog_damaged):
    """repair exits 0 (consistent), or 1 with its plan on stdout (changes to
    make, or chains that cannot be restored); anything else is judged as usual."""
    if r.rc in (0, 1) and not r.timed_out:
        try:
            j = r.json()
        except ValueError:
            return t.check(what, r, names)
        if catalog_damaged and j.get("catalog_ok", True) and not j.get("applied"):
            return t.record("WRONG", what, r, "repair found the damaged catalog usable")
        return t.record("right", what, r)
    return t.check(what, r, names)


def repair_and_check(t, repo, fx, names, damaged_archive=None, extra=None):
    """repair, repair --apply; then the listing keeps every intact backup with
    its original entry and every listed backup restores to its truth."""
    truth = dict(fx["truth"])
    expect = {e["id"]: e for e in fx["list"]}
    for i, (entry, dg) in (extra or {}).items():
        truth[i] = dg
        expect[i] = entry
    r = t.run(t.S("repair", "--repo", repo, "--json"))
    judge_repair(t, "repair (dry run)", r, names, damaged_archive is None)
    r = t.run(t.S("repair", "--repo", repo, "--apply", "--json"))
    judge_repair(t, "repair --apply", r, names, False)
    r = t.run(t.S("list", "--repo", repo, "--json"))
    if r.rc != 0:
        t.check("list after repair --apply", r, names, fail_class="unrecovered")
        return
    lst = {e["id"]: e for e in r.json()}
    bad = False
    for i, e in lst.items():
        if i not in expect:
            t.record("WRONG", "list after repair --apply", r, "unknown backup %s listed" % i)
            bad = True
        elif any(e[k] != expect[i].get(k) for k in e):
            t.record("WRONG", "list after repair --apply", r, "entry %s differs from the original" % i)
            bad = True
    parents = {i: e["parent"] for i, e in expect.items()}

    def chain(i):
        out = []
        while i:
            out.append(i)
            i = parents.get(i)
        return out
    intact = [i for i in expect if damaged_archive is None or damaged_archive not in chain(i)]
    missing = sorted(set(intact) - set(lst))
    if missing:
        t.record("lost", "list after repair --apply", r, "intact backups no longer listed: %s" % missing)
    elif not bad:
        t.record("right", "list after repair --apply", r)
    for i in lst:
        if i in truth:
            t.restore_check("restore after repair --apply", repo, i, truth[i], names,
                            fail_class="lost" if i in intact else None)


def cat_flip_catalog(t):
    fx = t.camp.fixture("repo", t.idx // FIXTURE_EVERY, build_repo_fixture)
    repo = trial_repo_copy(t, fx)
    rng = t.rng
    path = os.path.join(repo, "catalog")
    size = os.path.getsize(path)
    lines = open(path, "rb").read().split(b"\n")
    # regions: the version line, an entry line, the checksum line
    first = len(lines[0]) + 1
    last = size - len(lines[-2]) - 1 if len(lines) > 2 else size
    region = rng.choice(["version", "entries", "checksum", "anywhere"])
    lo, hi = {"version": (0, first), "entries": (first, last), "checksum": (last, size), "anywhere": (0, size)}[region]
    desc, cmd = mutate(rng, path, lo, hi)
    t.kind = "catalog " + region + " " + desc.split()[0]
    t.major = region
    t.log.append(cmd + "  # " + desc)
    names = ["catalog"]
    list_check(t, "list", repo, fx, names)
    for i in rng.sample(fx["ids"], 2):
        t.restore_check("restore", repo, i, fx["truth"][i], names)
    r = t.run(t.S("verify", "--repo", repo))
    t.check("verify", r, names, lambda: ("WRONG", "verify passed a damaged catalog (%s)" % desc))
    if rng.random() < 0.5:
        # a writer must not drop what the damaged catalog named
        r = t.run(t.S("backup", "--repo", repo, "--scan", "--json", fx["disk"]))
        holder = {}

        def v_backup():
            holder["id"] = json_id(r)
            r2 = t.run(t.S("list", "--repo", repo, "--json"))
            if r2.rc != 0:
                return "WRONG", "backup succeeded but the repository cannot be listed: " + r2.errtext().strip()
            got = {e["id"] for e in r2.json()}
            lost = set(fx["ids"]) - got
            if lost:
                return "WRONG", "a backup on a damaged catalog dropped %d backups" % len(lost)
            return "right", ""
        t.check("backup --scan on the damaged catalog", r, names, v_backup)
        if "id" in holder:
            t.restore_check("restore of the new backup", repo, holder["id"], content_digest(fx["disk"]), names)
            return
    repair_and_check(t, repo, fx, names)


def cat_flip_marker(t):
    fx = t.camp.fixture("repo", t.idx // FIXTURE_EVERY, build_repo_fixture)
    repo = trial_repo_copy(t, fx)
    path = os.path.join(repo, "strata-repository")
    desc, cmd = mutate(t.rng, path, 0, os.path.getsize(path))
    t.kind = "marker " + desc.split()[0]
    t.log.append(cmd + "  # " + desc)
    names = ["strata-repository"]
    list_check(t, "list", repo, fx, names)
    i = t.rng.choice(fx["ids"])
    t.restore_check("restore", repo, i, fx["truth"][i], names)
    r = t.run(t.S("backup", "--repo", repo, "--scan", "--json", fx["disk"]))
    holder = {}

    def v():
        holder["id"] = json_id(r)
        return "right", ""
    t.check("backup --scan", r, names, v)
    if "id" in holder:
        t.restore_check("restore of the new backup", repo, holder["id"], content_digest(fx["disk"]), names)
    r = t.run(t.S("verify", "--repo", repo))
    t.check("verify", r, names)


# ---- flip-tracker ----


def build_tracker_fixture(camp, fx, rng):
    """A 256 MiB disk (4 intent regions) with a tracker, a repository with a
    full and a tracker incremental, an extra checkpoint, a clean scribble and,
    in every other fixture, a scribble killed with SIGKILL (intent logs)."""
    d = fx["dir"]
    S = camp.strata
    fx["disk"] = os.path.join(d, "dt.raw")
    fx["repo"] = os.path.join(d, "repo")
    fx["tracker"] = os.path.join(d, "tt")
    gran = rng.choice(["4K", "64K", "64K", "1M"])
    fx["gran"] = {"4K": 4096, "64K": 65536, "1M": 1 << 20}[gran]
    block = "64K" if gran != "1M" else "1M"
    camp.fx_run(fx, [S, "generate", "--size", "256M", "--fill", "0.02", "--seed", str(rng.randrange(1 << 30)), fx["disk"]])
    camp.fx_run(fx, [S, "init", fx["repo"]])
    camp.fx_run(fx, [S, "tracker", "init", "--tracker", fx["tracker"], "--size", "256M", "--granularity", gran])
    camp.fx_run(fx, [S, "backup", "--repo", fx["repo"], "--full", "--tracker", fx["tracker"], fx["disk"]])
    camp.fx_run(fx, [S, "scribble", "--tracker", fx["tracker"], "--bytes", "2M", "--block", block,
                     "--seed", str(rng.randrange(1 << 30)), fx["disk"]])
    r = camp.fx_run(fx, [S, "backup", "--repo", fx["repo"], "--tracker", fx["tracker"], "--json", fx["disk"]])
    fx["last_cp"] = r.json()["end"]["name"]
    fx["last_map"] = block_map(fx["disk"], fx["gran"])
    camp.fx_run(fx, [S, "scribble", "--tracker", fx["tracker"], "--bytes", "1M", "--block", block,
                     "--seed", str(rng.randrange(1 << 30)), fx["disk"]])
    camp.fx_run(fx, [S, "checkpoint", "--tracker", fx["tracker"], "extra"])
    camp.fx_run(fx, [S, "scribble", "--tracker", fx["tracker"], "--bytes", "1M", "--block", block,
                     "--seed", str(rng.randrange(1 << 30)), fx["disk"]])
    fx["crashed"] = fx["gen"] % 3 != 2  # two fixtures in three end with a killed scribble
    if fx["crashed"]:
        # a scribble killed with SIGKILL: its intent log stays
        for attempt in range(6):
            argv = [S, "scribble", "--tracker", fx["tracker"], "--bytes", "200M", "--block", block,
                    "--seed", str(rng.randrange(1 << 30)), fx["disk"]]
            p = Proc(argv, d)
            delay = rng.uniform(0.05, 0.6)
            time.sleep(delay)
            p.kill9()
            p.finish(60)
            fx["log"].append("timeout -s KILL %.2f %s  # killed with SIGKILL after %.2f s" % (
                delay, " ".join(sh_quote(a) for a in argv), delay))
            if any(f.startswith("intent-") and os.path.getsize(os.path.join(fx["tracker"], f)) > 48 + 16
                   for f in os.listdir(fx["tracker"])):
                break
    fx["now_map"] = block_map(fx["disk"], fx["gran"])
    fx["changed"] = changed_blocks(fx["last_map"], fx["now_map"])
    fx["digest"] = content_digest(fx["disk"])
    r = camp.fx_run(fx, [S, "tracker", "list", "--tracker", fx["tracker"], "--json"])
    fx["cps"] = [(c["name"], c["id"]) for c in r.json()["checkpoints"]]
    fx["files"] = sorted(f for f in os.listdir(fx["tracker"]) if f != "LOCK")
    fx["sets"] = {}
    for f in fx["files"]:
        if f.endswith(".xset"):
            r = camp.fx_run(fx, [camp.dump, "--set", os.path.join(fx["tracker"], f), "--output", "json"])
            fx["sets"][f] = r.out
    r = camp.fx_run(fx, [camp.dump, "--tracker", fx["tracker"], "--since", fx["last_cp"], "--output", "json"])
    if uncovered(fx["changed"], fx["gran"], json.loads(r.out)):
        raise FixtureError("the undamaged tracker already misses written blocks")


def cat_flip_tracker(t):
    gen = t.idx // FIXTURE_EVERY
    fx = t.camp.fixture("tracker", gen, build_tracker_fixture)
    t.use_fixture(fx)
    rng = t.rng
    tdir = t.p("tt")
    repo = t.p("repo")
    copy_tree(fx["tracker"], tdir)
    copy_tree(fx["repo"], repo)
    t.log.append("cp -a %s %s && cp -a %s %s" % (sh_quote(fx["tracker"]), sh_quote(tdir),
                                                 sh_quote(fx["repo"]), sh_quote(repo)))
    f = rng.choice(fx["files"])
    path = os.path.join(tdir, f)
    size = os.path.getsize(path)
    fkind = f.split("-")[0].split(".")[0]
    if fkind == "MANIFEST":
        hs = 80 if size >= 88 else 64
        regions = {"header": (0, hs), "entries": (hs, size - 8), "trailer": (size - 8, size)}
    elif fkind == "intent":
        regions = {"header": (0, 48), "records": (48, size), "last-record": (max(48, size - 16), size)}
    else:
        regions = {"header": (0, 48), "shards": (48, size - 8), "trailer": (size - 8, size)}
    regions = {k: v for k, v in regions.items() if v[0] < v[1]} or {"all": (0, size)}
    region = rng.choice(sorted(regions))
    desc, cmd = mutate(rng, path, *regions[region])
    t.kind = "%s %s %s%s" % (fkind, region, desc.split()[0], " (after SIGKILL)" if fx["crashed"] else "")
    t.major = fkind + (" (killed scribble)" if fx["crashed"] and fkind != "intent" else "")
    t.log.append(cmd + "  # " + desc)
    names = [f]
    # the list of checkpoints
    r = t.run(t.S("tracker", "list", "--tracker", tdir, "--json"))

    def v_list():
        got = [(c["name"], c["id"]) for c in r.json()["checkpoints"]]
        return ("right", "") if got == fx["cps"] else ("WRONG", "checkpoints %s, undamaged %s" % (got, fx["cps"]))
    t.check("tracker list", r, names, v_list)
    # what changed since the last backup's checkpoint must cover every written block
    r = t.run(t.D("--tracker", tdir, "--since", fx["last_cp"], "--output", "json"))

    def v_since():
        miss = uncovered(fx["changed"], fx["gran"], json.loads(r.out))
        if miss:
            return "WRONG", "%d written blocks not reported (first at byte %d)" % (len(miss), miss[0] * fx["gran"])
        return "right", ""
    t.check("extent-dump --tracker --since", r, names, v_since)
    if f.endswith(".xset"):
        r = t.run(t.D("--set", path, "--output", "json"))
        t.check("extent-dump --set", r, names,
                lambda: ("right", "") if r.out == fx["sets"][f] else ("WRONG", "the damaged set reads differently"))
    # the one-step tracked backup, then its restore
    r = t.run(t.S("backup", "--repo", repo, "--tracker", tdir, "--json", fx["disk"]))
    holder = {}

    def v_backup():
        holder["id"] = json_id(r)
        return "right", ""
    t.check("backup --tracker", r, names, v_backup)
    if "id" in holder:
        t.restore_check("restore of the tracked backup", repo, holder["id"], fx["digest"], names)


# ---- flip-qcow2 ----


QCOW2_VARIANTS = ["plain", "small-clusters", "compressed-zlib", "compressed-zstd", "v2", "snapshot", "bitmap",
                  "extended-l2", "backing"]


def build_qcow2_fixture(camp, fx, rng):
    d = fx["dir"]
    S = camp.strata
    raw = os.path.join(d, "src.raw")
    camp.fx_run(fx, [S, "generate", "--size", rng.choice(["4M", "8M"]), "--fill", "0.4",
                     "--seed", str(rng.randrange(1 << 30)), raw])
    fx["images"] = {}
    for v in QCOW2_VARIANTS:
        img = os.path.join(d, v + ".qcow2")
        opts = {"plain": [], "small-clusters": ["-o", "cluster_size=4096"], "compressed-zlib": ["-c"],
                "compressed-zstd": ["-c", "-o", "compression_type=zstd"], "v2": ["-o", "compat=0.10"],
                "snapshot": [], "bitmap": [], "extended-l2": ["-o", "extended_l2=on"], "backing": []}[v]
        if v == "backing":
            base = os.path.join(d, "backing-base.qcow2")
            camp.fx_run(fx, ["qemu-img", "convert", "-O", "qcow2", raw, base])
            camp.fx_run(fx, ["qemu-img", "create", "-q", "-f", "qcow2", "-b", "backing-base.qcow2", "-F", "qcow2", img])
            camp.fx_run(fx, ["qemu-io", "-c", "write -P 0x5a 64k 192k", "-c", "write -z 1M 64k", img])
        else:
            camp.fx_run(fx, ["qemu-img", "convert", "-O", "qcow2"] + opts + [raw, img])
        if v == "snapshot":
            camp.fx_run(fx, ["qemu-img", "snapshot", "-c", "s1", img])
            camp.fx_run(fx, ["qemu-io", "-c", "write -P 0x33 128k 128k", "-c", "discard 2M 256k", img])
        if v == "bitmap":
            camp.fx_run(fx, ["qemu-img", "bitmap", "--add", img, "b0"])
            camp.fx_run(fx, ["qemu-io", "-c", "write -P 0x44 512k 64k", img])
        fx["images"][v] = img


# metadata that does not change what the active layer reads
GUEST_NEUTRAL = {"refcount-table", "refcount-block", "bitmap-directory", "bitmap-table", "snapshot-table",
                 "snapshot-l1"}


def cat_flip_qcow2(t):
    fx = t.camp.fixture("qcow2", t.idx // FIXTURE_EVERY, build_qcow2_fixture)
    t.use_fixture(fx)
    rng = t.rng
    v = rng.choice(QCOW2_VARIANTS)
    src = fx["images"][v]
    img = t.p(os.path.basename(src))
    shutil.copyfile(src, img)
    t.log.append("cp %s %s" % (sh_quote(src), sh_quote(img)))
    target = img
    if v == "backing":
        base_src = os.path.join(fx["dir"], "backing-base.qcow2")
        base = t.p("backing-base.qcow2")
        shutil.copyfile(base_src, base)
        t.log.append("cp %s %s" % (sh_quote(base_src), sh_quote(base)))
        if rng.random() < 0.3:
            target = base
    regions = qcow2_regions(target)
    if rng.random() < 0.1:
        kind = "truncate"
        desc, cmd = mutate(rng, target, 0, os.path.getsize(target), ("truncate",))
    else:
        kind = rng.choice(sorted(regions))
        lo, hi = rng.choice(regions[kind])
        if kind == "header" and rng.random() < 0.7:
            # the fields that matter most: sizes, offsets, features
            field = rng.choice([(24, 32), (32, 40), (20, 24), (36, 40), (40, 48), (48, 56), (56, 60),
                                (60, 64), (64, 72), (72, 80), (80, 88), (96, 100), (100, 104)])
            lo, hi = field[0], min(field[1], hi if hi > field[0] else field[1])
        desc, cmd = mutate(rng, target, lo, hi, ("bitflip", "byte", "byte", "zero"))
    t.kind = "%s %s" % (v, kind)
    t.major = kind
    t.log.append(cmd + "  # " + desc + (" (backing file)" if target != img else ""))
    names = [os.path.basename(img), os.path.basename(target)]
    # the reference: qemu-img on the mutated image
    info = t.run(["qemu-img", "info", "--output=json", img], timeout=60)
    ref = None
    vsize = None
    if info.ok:
        try:
            vsize = json.loads(info.out)["virtual-size"]
        except (ValueError, KeyError):
            vsize = None
    qemu_error = normalise(info.errtext(), t.camp.work)
    if vsize is not None and vsize <= 256 << 20:
        refpath = t.p("ref.raw")
        rc = t.run(["qemu-img", "convert", "-O", "raw", img, refpath], timeout=120)
        qemu_error = normalise(rc.errtext(), t.camp.work)
        if rc.ok:
            ref = content_digest(refpath)
            os.unlink(refpath)
    repo = t.p("repo")
    t.run(t.S("init", repo))
    r = t.run(t.S("backup", "--repo", repo, "--full", "--format", "qcow2", "--json", img))
    holder = {}

    def v_backup():
        holder["id"] = json_id(r)
        return "right", ""
    cls = t.check("backup --full --format qcow2", r, names, v_backup)
    if "id" not in holder:
        if ref is not None:
            t.camp.notes["qcow2: strata refused an image qemu-img reads: " + normalise(r.errtext(), t.camp.work)] += 1
        return
    out = t.p("out.raw")
    r2 = t.run(t.S("restore", "--repo", repo, "--backup", holder["id"], out))

    def v_restore():
        if ref is not None:
            return ("right", "") if content_digest(out) == ref else ("WRONG", "restore differs from qemu-img convert")
        if vsize is not None and vsize > 256 << 20:
            rc = t.run(["qemu-img", "compare", "-f", "qcow2", "-F", "raw", img, out], timeout=300)
            if rc.rc == 0:
                return "right", ""
            if rc.rc == 1:
                return "WRONG", "restore differs from the image as qemu-img compare reads it"
        if kind in GUEST_NEUTRAL:
            # refcounts, bitmaps and snapshots do not change what the active
            # layer reads: the undamaged image as qemu-img reads it is the truth
            orig = t.p("orig.raw")
            rc = t.run(["qemu-img", "convert", "-O", "raw", src, orig], timeout=120)
            if rc.ok:
                d = content_digest(orig)
                os.unlink(orig)
                t.camp.notes["qcow2: qemu-img refused, strata read it, compared with the undamaged image"] += 1
                return ("right", "") if content_digest(out) == d else ("WRONG", "restore differs from the undamaged image")
        t.camp.notes["qcow2: qemu-img refused, strata read it (not judged): " + qemu_error] += 1
        return "right", "no reference"
    t.check("restore", r2, names, v_restore)
    if v == "snapshot":
        qcow2_snapshot_check(t, img, repo, names)


def qcow2_snapshot_check(t, img, repo, names):
    """The internal snapshot's view: strata's backup of it against
    `qemu-img convert -l s1` (compared when both give the same size: strata
    uses the snapshot's own disk_size, QEMU the image's, a documented
    difference of resized images)."""
    refpath = t.p("ref-s1.raw")
    rc = t.run(["qemu-img", "convert", "-O", "raw", "-l", "snapshot.name=s1", img, refpath], timeout=120)
    ref = content_digest(refpath) if rc.ok else None
    ref_size = os.path.getsize(refpath) if rc.ok else None
    if rc.ok:
        os.unlink(refpath)
    r = t.run(t.S("backup", "--repo", repo, "--full", "--format", "qcow2", "--snapshot", "s1", "--disk", "snap",
                  "--json", img))
    holder = {}

    def v_backup():
        holder["id"] = json_id(r)
        holder["size"] = r.json()["disk_size"]
        return "right", ""
    t.check("backup --full --snapshot s1", r, names, v_backup)
    if "id" not in holder:
        return
    out = t.p("out-s1.raw")
    r2 = t.run(t.S("restore", "--repo", repo, "--backup", holder["id"], out))

    def v_restore():
        if ref is None:
            t.camp.notes["qcow2: qemu-img refused the snapshot, strata read it (not judged)"] += 1
            return "right", "no reference"
        if holder["size"] != ref_size:
            t.camp.notes["qcow2: snapshot view size differs from qemu-img's (documented; not judged)"] += 1
            return "right", "size differs"
        t.camp.notes["qcow2: snapshot view compared with qemu-img convert -l"] += 1
        return ("right", "") if content_digest(out) == ref else ("WRONG", "snapshot view differs from qemu-img convert -l")
    t.check("restore of the snapshot view", r2, names, v_restore)


# ---- kill9 ----

KILL_OPS = ["backup-full", "backup-tracker", "backup-scan", "merge-remove", "merge-fold", "merge-synthetic",
            "restore", "checkpoint", "tracker-mark", "scribble", "repair-apply"]


def build_kill_fixture(camp, fx, rng):
    d = fx["dir"]
    S = camp.strata
    fx["disk"] = os.path.join(d, "dk.raw")
    fx["repo"] = os.path.join(d, "repo")
    fx["tracker"] = os.path.join(d, "tk")
    fx["truth"] = {}
    camp.fx_run(fx, [S, "generate", "--size", "64M", "--fill", str(rng.choice([0.3, 0.5])),
                     "--seed", str(rng.randrange(1 << 30)), fx["disk"]])
    camp.fx_run(fx, [S, "init", fx["repo"]])
    camp.fx_run(fx, [S, "tracker", "init", "--tracker", fx["tracker"], "--size", "64M"])
    r = camp.fx_run(fx, [S, "backup", "--repo", fx["repo"], "--full", "--tracker", fx["tracker"], "--json", fx["disk"]])
    fx["truth"][json_id(r)] = content_digest(fx["disk"])
    for _ in range(2):
        camp.fx_run(fx, [S, "scribble", "--tracker", fx["tracker"], "--bytes", "4M", "--seed",
                         str(rng.randrange(1 << 30)), fx["disk"]])
        r = camp.fx_run(fx, [S, "backup", "--repo", fx["repo"], "--tracker", fx["tracker"], "--json", fx["disk"]])
        fx["truth"][json_id(r)] = content_digest(fx["disk"])
    camp.fx_run(fx, [S, "scribble", "--tracker", fx["tracker"], "--bytes", "4M", "--seed",
                     str(rng.randrange(1 << 30)), fx["disk"]])
    r = camp.fx_run(fx, [S, "backup", "--repo", fx["repo"], "--scan", "--json", fx["disk"]])
    fx["truth"][json_id(r)] = content_digest(fx["disk"])
    r = camp.fx_run(fx, [S, "list", "--repo", fx["repo"], "--json"])
    fx["list"] = r.json()
    fx["ids"] = [e["id"] for e in fx["list"]]


def repo_state_check(t, repo, truth, acked, removed_ok=(), must_be_gone=(), names=None, unacked_truth=None):
    """After recovery: every acknowledged backup is listed and restores to its
    truth; every other listed backup restores to its truth too."""
    r = t.run(t.S("list", "--repo", repo, "--json"))
    if r.rc != 0:
        cls, detail = t.failure_class(r, names)
        t.record("lost" if cls == "refused" else cls, "list after recovery", r, detail or "repository unreadable")
        return
    listed = r.json()
    ids = {e["id"] for e in listed}
    for a in acked:
        if a not in ids and a not in removed_ok:
            t.record("lost", "list after recovery", r, "acknowledged backup %s is gone" % a)
    for g in must_be_gone:
        if g in ids:
            t.record("WRONG", "list after recovery", r, "backup %s whose removal was acknowledged is listed" % g)
    for e in listed:
        i = e["id"]
        tr = truth.get(i)
        if tr is None and e.get("source_name", "").startswith("synthetic full of "):
            tr = truth.get(e["source_name"][len("synthetic full of "):])
        if tr is None and unacked_truth is not None:
            tr = unacked_truth  # the killed backup committed before it died: it must be complete
        if tr is None:
            t.record("WRONG", "list after recovery", r, "backup %s of unknown origin listed" % i)
            continue
        t.restore_check("restore after recovery", repo, i, tr, names, fail_class="lost" if i in acked else None)


def cat_kill9(t):
    fx = t.camp.fixture("kill", t.idx // FIXTURE_EVERY, build_kill_fixture)
    t.use_fixture(fx)
    rng = t.rng
    camp = t.camp
    repo, tdir, disk = t.p("repo"), t.p("tk"), t.p("dk.raw")
    copy_tree(fx["repo"], repo)
    copy_tree(fx["tracker"], tdir)
    sparse_copy(fx["disk"], disk)
    t.log.append("cp -a %s %s; cp -a %s %s; cp --sparse=always %s %s" % (
        sh_quote(fx["repo"]), sh_quote(repo), sh_quote(fx["tracker"]), sh_quote(tdir),
        sh_quote(fx["disk"]), sh_quote(disk)))
    truth = dict(fx["truth"])
    acked = list(fx["ids"])
    op = KILL_OPS[t.idx % len(KILL_OPS)] if rng.random() < 0.5 else rng.choice(KILL_OPS)
    t.kind = op
    dname = ["--disk", fx["disk"]]
    pre = None
    if op == "backup-tracker" or op == "checkpoint" or op == "tracker-mark":
        r = t.run(t.S("scribble", "--tracker", tdir, "--bytes", rng.choice(["1M", "4M", "8M"]),
                      "--seed", str(rng.randrange(1 << 30)), disk))
        t.check("scribble before", r, [disk], fail_class="badmsg")
    target = rng.choice(acked)
    victim = None
    if op == "backup-full":
        argv = t.S("backup", "--repo", repo, "--full", "--tracker", tdir, "--json", *dname, disk)
    elif op == "backup-tracker":
        argv = t.S("backup", "--repo", repo, "--tracker", tdir, "--json", *dname, disk)
    elif op == "backup-scan":
        r = t.run(t.S("scribble", "--tracker", tdir, "--bytes", "2M", "--seed", str(rng.randrange(1 << 30)), disk))
        t.check("scribble before", r, [disk], fail_class="badmsg")
        argv = t.S("backup", "--repo", repo, "--scan", "--json", *dname, disk)
    elif op == "merge-remove":
        victim = target
        argv = t.S("merge", "--repo", repo, "--remove", target, "--json")
    elif op == "merge-fold":
        target = rng.choice(acked[1:])
        victim = [e["parent"] for e in fx["list"] if e["id"] == target][0]
        argv = t.S("merge", "--repo", repo, "--fold", target, "--json")
    elif op == "merge-synthetic":
        argv = t.S("merge", "--repo", repo, "--synthetic-full", target, "--json")
    elif op == "restore":
        argv = t.S("restore", "--repo", repo, "--backup", target, t.p("killed-restore.raw"))
    elif op == "checkpoint":
        argv = t.S("checkpoint", "--tracker", tdir, "cp-%d" % t.idx)
    elif op == "tracker-mark":
        off = rng.randrange(0, 64 << 20, 4096)
        ln = rng.randrange(1, 1 << 20)
        pre = (off, ln)
        argv = t.S("tracker", "mark", "--tracker", tdir, str(off), str(ln))
    elif op == "scribble":
        argv = t.S("scribble", "--tracker", tdir, "--bytes", rng.choice(["4M", "16M", "32M"]),
                   "--seed", str(rng.randrange(1 << 30)), disk)
    elif op == "repair-apply":
        cat = os.path.join(repo, "catalog")
        desc, cmd = mutate(rng, cat, 0, os.path.getsize(cat), ("byte", "truncate"))
        t.log.append(cmd + "  # " + desc)
        argv = t.S("repair", "--repo", repo, "--apply")
    disk_digest = content_digest(disk)
    # the first run of each operation on a fixture is not killed: it measures
    # how long the operation takes; later ones are killed uniformly within it
    key = (fx["gen"], op)
    delay = rng.uniform(0, camp.durations[op] * 1.2) if key in camp.measured else None
    camp.measured.add(key)
    p = t.start(argv)
    if delay is not None:
        time.sleep(delay)
        p.kill9()
    r = p.finish(camp.timeout)
    t.log.append("# ^ killed with SIGKILL after %.3f s%s" % (delay or 0, "" if r.killed_by_us else " (had finished)"))
    if not r.killed_by_us:
        camp.durations[op] = max(camp.durations[op] if delay is not None else 0, r.secs)
        camp.notes["kill9: %s finished before the kill" % op] += 1
    else:
        camp.notes["kill9: %s killed" % op] += 1
    acked_removal = []
    if not r.killed_by_us:
        # it finished: judge it as usual
        if op.startswith("backup"):
            holder = {}

            def v():
                holder["id"] = json_id(r)
                return "right", ""
            t.check(op, r, [disk, repo, tdir], v, fail_class="badmsg")
            if "id" in holder:
                truth[holder["id"]] = disk_digest
                acked.append(holder["id"])
        elif op.startswith("merge"):
            t.check(op, r, [repo], fail_class="badmsg")
            if r.ok and victim:
                acked_removal.append(victim)
        else:
            t.check(op, r, [repo, tdir, disk])
    # the next writer
    if op in ("checkpoint", "tracker-mark", "scribble") or op.startswith("backup"):
        # the tracker: acknowledged marks stay covered, a tracked backup restores
        if op == "tracker-mark" and r.ok:
            cps = t.run(t.S("tracker", "list", "--tracker", tdir, "--json"))
            if cps.ok:
                last = cps.json()["checkpoints"][-1]["name"]
                rr = t.run(t.D("--tracker", tdir, "--since", last, "--output", "json"))
                g = 4096
                first, lastb = pre[0] // g, (pre[0] + pre[1] - 1) // g
                t.check("acknowledged mark covered", rr, [tdir],
                        lambda: ("right", "") if not uncovered(range(first, lastb + 1), g, json.loads(rr.out))
                        else ("WRONG", "an acknowledged mark is not reported"))
        now = content_digest(disk)
        nb = t.run(t.S("backup", "--repo", repo, "--tracker", tdir, "--json", *dname, disk))
        holder = {}

        def v():
            holder["id"] = json_id(nb)
            return "right", ""
        t.check("next tracked backup", nb, [tdir, repo, "unknown"], v)
        if "id" in holder:
            truth[holder["id"]] = now
            acked.append(holder["id"])
        else:
            rs = t.run(t.S("merge", "--repo", repo, "--resume"))
            t.check("merge --resume", rs, [repo], fail_class="unrecovered")
    elif op == "repair-apply":
        rs = t.run(t.S("repair", "--repo", repo, "--apply"))
        t.check("repair --apply again", rs, [repo], fail_class="unrecovered")
    else:
        rs = t.run(t.S("merge", "--repo", repo, "--resume"))
        t.check("merge --resume", rs, [repo], fail_class="unrecovered")
    left = [x for x in leftovers(repo)] + [x for x in leftovers(tdir)]
    if left:
        t.note_bad("leftover", "temporaries after the next writer", ", ".join(os.fsdecode(x) for x in left[:3]))
    vr = t.run(t.S("verify", "--repo", repo))
    t.check("verify after recovery", vr, [repo], fail_class="unrecovered")
    removed_ok = [victim] if victim else []
    repo_state_check(t, repo, truth, acked, removed_ok=removed_ok, must_be_gone=acked_removal,
                     unacked_truth=disk_digest if op.startswith("backup") and r.killed_by_us else None)


# ---- diskfull ----


def build_full_fixture(camp, fx, rng):
    d = fx["dir"]
    S = camp.strata
    fx["disk"] = os.path.join(d, "df.raw")
    camp.fx_run(fx, [S, "generate", "--size", "16M", "--fill", "0.4", "--seed", str(rng.randrange(1 << 30)), fx["disk"]])
    fx["digest"] = content_digest(fx["disk"])
    fx["repo"] = os.path.join(d, "repo")
    camp.fx_run(fx, [S, "init", fx["repo"]])
    r = camp.fx_run(fx, [S, "backup", "--repo", fx["repo"], "--full", "--json", fx["disk"]])
    fx["full"] = json_id(r)
    fx["big"] = os.path.join(d, "big.raw")
    camp.fx_run(fx, [S, "generate", "--size", "256M", "--fill", "0.01", "--seed", str(rng.randrange(1 << 30)), fx["big"]])


def cat_diskfull(t):
    fx = t.camp.fixture("full", t.idx // FIXTURE_EVERY, build_full_fixture)
    t.use_fixture(fx)
    rng = t.rng
    camp = t.camp
    mnt = t.p("mnt")
    variant = ["repo", "restore-output", "tracker"][t.idx % 3]
    t.kind = variant
    size = {"repo": rng.randrange(64 << 10, 10 << 20, 4096), "restore-output": rng.randrange(16 << 10, 8 << 20, 4096),
            "tracker": rng.randrange(16 << 10, 512 << 10, 4096)}[variant]
    t.log.append("mkdir -p mnt && mount -t tmpfs -o size=%d strata-hostile mnt" % size)
    camp.mount_tmpfs(mnt, size)
    try:
        if variant == "repo":
            diskfull_repo(t, fx, mnt)
        elif variant == "restore-output":
            out = os.path.join(mnt, "out.raw")
            t.restore_check("restore onto a small tmpfs", fx["repo"], fx["full"], fx["digest"], [out], out=out)
        else:
            diskfull_tracker(t, fx, mnt)
    finally:
        t.log.append("umount mnt")
        camp.umount(mnt)


def diskfull_repo(t, fx, mnt):
    rng = t.rng
    repo = os.path.join(mnt, "repo")
    disk = t.p("df.raw")
    sparse_copy(fx["disk"], disk)
    r = t.run(t.S("init", repo))
    if t.check("init", r, [repo]) != "right":
        return
    truth, acked = {}, []
    # fill part of the file system so the next writes hit ENOSPC at random points
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    filler = os.path.join(mnt, "filler")
    fill = rng.randrange(0, max(free, 1))
    with open(filler, "wb") as f:
        try:
            f.write(b"\xaa" * fill)
        except OSError:
            pass
    t.log.append("head -c %d /dev/zero > mnt/filler" % fill)
    dname = ["--disk", "df"]
    pending = []  # victims of removals that failed: journaled, the next writer with space finishes them
    steps = ["full", "scan", "synthetic", "scan", "remove", "full"]
    for step in steps:
        now = content_digest(disk)
        if step == "full":
            argv = t.S("backup", "--repo", repo, "--full", "--json", *dname, disk)
        elif step == "scan":
            t.run(t.S("scribble", "--bytes", rng.choice(["256K", "2M"]), "--seed", str(rng.randrange(1 << 30)), disk))
            now = content_digest(disk)
            argv = t.S("backup", "--repo", repo, "--scan", "--json", *dname, disk)
        elif step == "synthetic":
            if not acked:
                continue
            src = rng.choice(acked)
            argv = t.S("merge", "--repo", repo, "--synthetic-full", src, "--json")
            now = truth[src]
        else:
            if len(acked) < 2:
                continue
            victim = rng.choice(acked[:-1])
            argv = t.S("merge", "--repo", repo, "--remove", victim, "--json")
        r = t.run(argv)
        holder = {}

        def v():
            if step in ("full", "scan", "synthetic"):
                holder["id"] = json_id(r)
            return "right", ""
        t.check("%s on a full file system" % step, r, [repo], v)
        if step == "remove" and r.ok:
            acked.remove(victim)
            del truth[victim]
        elif step == "remove":
            pending.append(victim)
        if "id" in holder:
            truth[holder["id"]] = now
            acked.append(holder["id"])
        if not r.ok:
            # nothing acknowledged is lost; the repository verifies (or says
            # that an interrupted removal waits for the next writer)
            vr = t.run(t.S("verify", "--repo", repo))
            interrupted = pending and "was interrupted" in vr.errtext()
            t.check("verify after a failed %s" % step, vr, [repo], fail_class=None if interrupted else "unrecovered")
            repo_state_check(t, repo, truth, acked, removed_ok=pending)
    rs = t.run(t.S("merge", "--repo", repo, "--resume"))
    t.check("merge --resume", rs, [repo])
    os.unlink(filler)
    # space returns: the file system grows to 64 MiB, and the next writer must finish
    subprocess.run(["mount", "-o", "remount,size=%d" % (64 << 20), mnt], check=True)
    t.log.append("rm mnt/filler; mount -o remount,size=%d mnt" % (64 << 20))
    rs = t.run(t.S("merge", "--repo", repo, "--resume"))
    t.check("merge --resume with space", rs, [repo], fail_class="unrecovered")
    left = leftovers(repo)
    if left:
        t.note_bad("leftover", "temporaries after the next writer", ", ".join(os.fsdecode(x) for x in left[:3]))
    vr = t.run(t.S("verify", "--repo", repo))
    t.check("verify after space returned", vr, [repo], fail_class="unrecovered")
    repo_state_check(t, repo, truth, acked, removed_ok=pending)


def diskfull_tracker(t, fx, mnt):
    rng = t.rng
    tdir = os.path.join(mnt, "tk")
    disk = t.p("big.raw")
    sparse_copy(fx["big"], disk)
    repo = t.p("repo")
    t.run(t.S("init", repo))
    r = t.run(t.S("tracker", "init", "--tracker", tdir, "--size", "256M", "--granularity", rng.choice(["4K", "64K"])))
    if t.check("tracker init", r, [tdir]) != "right":
        return
    r = t.run(t.S("backup", "--repo", repo, "--full", "--tracker", tdir, "--json", disk))
    full_ok = t.check("backup --full --tracker (state on a small tmpfs)", r, [tdir]) == "right"
    if not full_ok:
        r = t.run(t.S("backup", "--repo", repo, "--full", "--json", disk))
        t.check("backup --full without tracker", r, [disk], fail_class="badmsg")
    # fill the rest; then writes through the tracker and checkpoints fail
    st = os.statvfs(mnt)
    filler = os.path.join(mnt, "filler")
    fill = rng.randrange(0, max(st.f_bavail * st.f_frsize, 1) + 1)
    with open(filler, "wb") as f:
        try:
            f.write(b"\xaa" * fill)
        except OSError:
            pass
    t.log.append("head -c %d /dev/zero > mnt/filler" % fill)
    for i in range(rng.randrange(1, 4)):
        if rng.random() < 0.6:
            r = t.run(t.S("scribble", "--tracker", tdir, "--bytes", rng.choice(["64K", "1M", "8M"]), "--seed",
                          str(rng.randrange(1 << 30)), disk))
            t.check("scribble --tracker on a full tracker file system", r, [tdir])
        else:
            r = t.run(t.S("checkpoint", "--tracker", tdir, "c%d" % i))
            t.check("checkpoint on a full tracker file system", r, [tdir])
    os.unlink(filler)
    t.log.append("rm mnt/filler")
    now = content_digest(disk)
    r = t.run(t.S("backup", "--repo", repo, "--tracker", tdir, "--json", disk))
    holder = {}

    def v():
        holder["id"] = json_id(r)
        return "right", ""
    t.check("backup --tracker after space returned", r, [tdir, "unknown"], v)
    if "id" in holder:
        t.restore_check("restore of that backup", repo, holder["id"], now, [repo])
    left = leftovers(tdir)
    if left:
        t.note_bad("leftover", "tracker temporaries after the next open", ", ".join(os.fsdecode(x) for x in left[:3]))


# ---- concurrency ----


def build_conc_fixture(camp, fx, rng):
    d = fx["dir"]
    S = camp.strata
    fx["repo"] = os.path.join(d, "repo")
    fx["truth"] = {}
    fx["disks"] = []
    camp.fx_run(fx, [S, "init", fx["repo"]])
    for n in range(2):
        disk = os.path.join(d, "c%d.raw" % n)
        camp.fx_run(fx, [S, "generate", "--size", "16M", "--fill", "0.4", "--seed", str(rng.randrange(1 << 30)), disk])
        tdir = os.path.join(d, "tc%d" % n)
        camp.fx_run(fx, [S, "tracker", "init", "--tracker", tdir, "--size", "16M"])
        r = camp.fx_run(fx, [S, "backup", "--repo", fx["repo"], "--full", "--tracker", tdir, "--json", disk])
        fx["truth"][json_id(r)] = content_digest(disk)
        for _ in range(2):
            camp.fx_run(fx, [S, "scribble", "--tracker", tdir, "--bytes", "1M", "--seed", str(rng.randrange(1 << 30)), disk])
            r = camp.fx_run(fx, [S, "backup", "--repo", fx["repo"], "--tracker", tdir, "--json", disk])
            fx["truth"][json_id(r)] = content_digest(disk)
        fx["disks"].append((disk, tdir, content_digest(disk)))
    r = camp.fx_run(fx, [S, "list", "--repo", fx["repo"], "--json"])
    fx["list"] = r.json()
    fx["ids"] = [e["id"] for e in fx["list"]]


def cat_concurrency(t):
    fx = t.camp.fixture("conc", t.idx // FIXTURE_EVERY, build_conc_fixture)
    t.use_fixture(fx)
    rng = t.rng
    repo = t.p("repo")
    copy_tree(fx["repo"], repo)
    trackers = []
    for disk, tdir, dg in fx["disks"]:
        td = t.p(os.path.basename(tdir))
        copy_tree(tdir, td)
        trackers.append(td)
    t.log.append("cp -a %s %s  # and the trackers" % (sh_quote(fx["repo"]), sh_quote(repo)))
    truth = dict(fx["truth"])
    k = rng.randrange(2, 7)
    wait = rng.random() < 0.5
    ops = []
    for j in range(k):
        kind = rng.choice(["backup-full", "backup-scan", "backup-tracker", "restore", "restore", "verify", "list",
                           "merge-remove", "merge-synthetic", "merge-fold", "repair", "info"])
        n = rng.randrange(len(fx["disks"]))
        disk, _, dg = fx["disks"][n]
        lw = ["--lock-wait", "60"] if wait or rng.random() < 0.2 else []
        bid = rng.choice(fx["ids"])
        if kind == "backup-full":
            argv = t.S("backup", "--repo", repo, "--full", "--json", *lw, disk)
        elif kind == "backup-scan":
            argv = t.S("backup", "--repo", repo, "--scan", "--json", *lw, disk)
        elif kind == "backup-tracker":
            argv = t.S("backup", "--repo", repo, "--tracker", trackers[n], "--json", *lw, disk)
        elif kind == "restore":
            argv = t.S("restore", "--repo", repo, "--backup", bid, *lw, t.p("out-%d.raw" % j))
        elif kind == "verify":
            argv = t.S("verify", "--repo", repo, *lw)
        elif kind == "list":
            argv = t.S("list", "--repo", repo, "--json", *lw)
        elif kind == "info":
            argv = t.S("info", "--repo", repo, "--backup", bid, "--json", *lw)
        elif kind == "merge-remove":
            argv = t.S("merge", "--repo", repo, "--remove", bid, "--json", *lw)
        elif kind == "merge-synthetic":
            argv = t.S("merge", "--repo", repo, "--synthetic-full", bid, "--json", *lw)
        elif kind == "merge-fold":
            bid = rng.choice([e["id"] for e in fx["list"] if e["parent"]])
            argv = t.S("merge", "--repo", repo, "--fold", bid, "--json", *lw)
        else:
            argv = t.S("repair", "--repo", repo, "--json", *lw)
        ops.append((kind, bid, dg, argv, j))
    t.kind = "%d at once%s" % (k, ", --lock-wait" if wait else "")
    t.major = "lock-wait" if wait else "no-wait"
    procs = [(op, t.start(op[3])) for op in ops]
    acked = list(fx["ids"])
    removed = []
    for (kind, bid, dg, argv, j), p in procs:
        r = p.finish(t.camp.timeout)
        # on an intact repository the only good reasons to fail are a busy
        # repository or tracker and a backup another process just removed
        names = ["in use", "no backup " + bid, "is a full backup", "locked"]
        if kind.startswith("backup"):
            holder = {}

            def v():
                holder["id"] = json_id(r)
                return "right", ""
            t.check(kind, r, names, v)
            if "id" in holder:
                truth[holder["id"]] = dg
                acked.append(holder["id"])
        elif kind == "restore":
            out = t.p("out-%d.raw" % j)

            def v():
                return ("right", "") if content_digest(out) == truth[bid] else ("WRONG", "restore of %s differs" % bid)
            t.check(kind, r, names, v)
            if r.rc > 0 and os.path.lexists(out):
                t.record("leftover", "output of a failed restore", r, out)
        elif kind in ("merge-remove", "merge-fold"):
            t.check(kind, r, names)
            if r.ok:
                removed.append(r.json()["removed"])
        elif kind == "merge-synthetic":
            t.check(kind, r, names)
            if r.ok:
                truth[r.json()["id"]] = truth[bid]
                acked.append(r.json()["id"])
        elif kind == "verify":
            t.check(kind, r, names)
        else:
            t.check(kind, r, names)
    for x in removed:
        if x in acked:
            acked.remove(x)
    rs = t.run(t.S("verify", "--repo", repo))
    t.check("verify after", rs, [repo], fail_class="unrecovered")
    repo_state_check(t, repo, truth, acked, must_be_gone=removed)


# ---- oddpaths ----


# ---- flip-journal ----


def loop_fs(camp):
    """One ext4 file system on a loop device inside the campaign's work
    directory (created on first use; cleanup() unmounts and detaches exactly
    it). Freezes are confined to it with --confine."""
    if camp.loop is None:
        d = os.path.join(camp.work, "loopfs")
        os.makedirs(d)
        img = os.path.join(d, "fs.img")
        mnt = os.path.join(d, "mnt")
        os.makedirs(mnt)
        subprocess.run(["truncate", "-s", "64M", img], check=True)
        subprocess.run(["mkfs.ext4", "-q", img], check=True)
        dev = subprocess.run(["losetup", "-f", "--show", img], check=True, capture_output=True,
                             text=True).stdout.strip()
        camp.loop = {"dir": d, "img": img, "mnt": mnt, "dev": dev}
        if subprocess.run(["mount", dev, mnt]).returncode != 0:
            subprocess.run(["losetup", "-d", dev])
            camp.loop = None
            raise FixtureError("mount %s %s failed" % (dev, mnt))
        camp.mounts.append(mnt)
    return camp.loop


def probe_frozen(mnt):
    """True if our own loop file system is frozen (FIFREEZE answers EBUSY);
    a file system that was not frozen is thawed again at once."""
    r = subprocess.run(["fsfreeze", "-f", mnt], capture_output=True)
    if r.returncode == 0:
        subprocess.run(["fsfreeze", "-u", mnt], check=True)
        return False
    if b"busy" in r.stderr.lower():
        return True
    raise FixtureError("fsfreeze -f %s: %s" % (mnt, r.stderr.decode(errors="replace").strip()))


def thaw_own(mnt):
    """Thaws our loop file system; True if it was frozen."""
    return subprocess.run(["fsfreeze", "-u", mnt], capture_output=True).returncode == 0


def cat_flip_journal(t):
    """The freeze journal: `strata freeze --exec` killed with SIGKILL inside
    its window (or at a random moment), the journal it leaves damaged, then
    `strata status` and `strata thaw --all`. Judge: thaw --all must not exit
    0 while the file system stays frozen, and status must not say nothing is
    left frozen while it is."""
    camp = t.camp
    rng = t.rng
    lf = loop_fs(camp)
    mnt = lf["mnt"]
    t.log.append("# an ext4 file system of our own mounted at %s (loop device)" % sh_quote(mnt))
    if probe_frozen(mnt):  # an earlier trial's leftover: never judge on it
        thaw_own(mnt)
    sd = t.p("sd")
    os.makedirs(sd, mode=0o700)
    variant = rng.choice(["in-window", "in-window", "in-window", "random-kill", "intact"])
    base = t.S("freeze", "--confine", lf["dir"], "--state-dir", sd, "--deadline", "60")
    if variant == "random-kill":
        p = t.start(base + ["--exec", "sleep 0.2", mnt])
        delay = rng.uniform(0.0, 0.4)
        time.sleep(delay)
        p.kill9()
        p.finish(30)
        t.log.append("# killed with SIGKILL after %.2f s" % delay)
    else:
        r = t.run(base + ["--exec", "kill -9 $PPID", mnt])
        if r.rc != -9:
            t.note_bad("badmsg", "freeze --exec killed in its window", "exit %s: %s" % (r.rc, r.errtext()[-300:]))
    journals = sorted(f for f in os.listdir(sd) if f.startswith("journal-"))
    desc = "no journal"
    if journals and variant != "intact":
        path = os.path.join(sd, journals[0])
        size = os.path.getsize(path)
        desc, cmd = mutate(rng, path, 0, size)
        t.log.append(cmd + "  # " + desc)
    t.kind = "%s %s" % (variant, desc.split()[0] if journals and variant != "intact" else "-")
    t.major = variant
    names = [sd] + [os.path.join(sd, j) for j in journals] + [mnt]
    frozen = probe_frozen(mnt)
    t.log.append("# file system %s before the recovery" % ("frozen" if frozen else "not frozen"))
    r = t.run(t.S("status", "--state-dir", sd))

    def v_status():
        out = r.out.decode("utf-8", "surrogateescape")
        if frozen and mnt not in out and "damaged" not in out and "unknown" not in out.lower():
            return "WRONG", "status names nothing left frozen, but %s is frozen" % mnt
        return "right", ""
    t.check("status", r, names, v_status)
    r = t.run(t.S("thaw", "--all", "--state-dir", sd))
    still = thaw_own(mnt)
    t.log.append("fsfreeze -u %s  # %s" % (sh_quote(mnt), "was still frozen" if still else "was not frozen"))
    out = r.out.decode("utf-8", "surrogateescape")
    if r.rc == 0:
        t.check("thaw --all", r, names,
                lambda: ("WRONG", "exit 0 but %s is still frozen" % mnt) if still else ("right", ""))
    elif r.rc == 1 and not r.timed_out and "NOT recovered" in out and any(
            os.fsdecode(b(n)) in out for n in names):
        t.record("refused", "thaw --all", r)
        left = [f for f in os.listdir(sd) if f.startswith("journal-")]
        if not left:
            t.record("lost", "thaw --all", r, "NOT recovered, but the journal is gone")
    else:
        t.check("thaw --all", r, names)
    if still and r.rc == 0:
        pass  # already judged WRONG


def odd_name(rng, long_ok=True):
    choices = [b"disk with spaces.raw", b"new\nline.raw", b"bad\xff\xfe.raw", b"-leading-dash.raw",
               b"tab\tname.raw", b"quote'\"$(x).raw", b"star*?[a].raw", "ünïcödé.raw".encode(),
               b"back\\slash.raw", b" leading space.raw", b"trailing space.raw ", b"..raw", b"--", b"-",
               b"\x01ctrl.raw"]
    if long_ok:
        choices += [b"L" * 250 + b".raw", b"x" * 255]
    return rng.choice(choices)


def cat_oddpaths(t):
    rng = t.rng
    variant = ["image-name", "repo-name", "output-name", "tracker-name", "disk-name", "special-image",
               "special-output", "special-repo", "relative", "symlinks"][t.idx % 10]
    t.kind = t.major = variant
    base = os.fsencode(t.dir)
    gen_seed = str(rng.randrange(1 << 30))
    src = os.path.join(base, b"src.raw")
    r = t.run(t.S("generate", "--size", rng.choice(["1M", "3M", "4M"]), "--fill", "0.5", "--seed", gen_seed, src))
    t.check("generate", r, None, fail_class="badmsg")
    truth = content_digest(src)
    repo = os.path.join(base, b"repo")
    image = src
    out = os.path.join(base, b"out.raw")
    tracker = None
    disk_name = None
    cwd = t.dir
    timeout = 20
    if variant == "image-name":
        image = os.path.join(base, odd_name(rng))
        os.rename(src, image)
    elif variant == "repo-name":
        repo = os.path.join(base, odd_name(rng))
    elif variant == "output-name":
        out = os.path.join(base, odd_name(rng))
    elif variant == "tracker-name":
        tracker = os.path.join(base, odd_name(rng))
    elif variant == "disk-name":
        disk_name = rng.choice([b"", b"-", b"--", b"name\nwith newline", b"tab\there", b"\xff\xfe", b"a" * 1023,
                                b"a" * 1024, b"b" * 5000, b"/abs/looking", b"  spaces  ", b"\x01\x02", "ü".encode()])
    elif variant == "relative":
        sub = os.path.join(base, b"sub")
        os.makedirs(sub)
        cwd = sub
        os.rename(src, os.path.join(sub, b"img.raw"))
        image, repo, out = b"img.raw", b"../repo", b"./out.raw"
        tracker = b"trk" if rng.random() < 0.5 else None
    elif variant == "symlinks":
        real = os.path.join(base, b"real")
        os.makedirs(real)
        os.rename(src, os.path.join(real, b"img.raw"))
        os.symlink(b"real/img.raw", os.path.join(base, b"link.raw"))
        image = os.path.join(base, b"link.raw")
        if rng.random() < 0.5:
            os.symlink(b"real/repo", repo)  # a dangling symlink: init creates the directory or refuses
    elif variant in ("special-image", "special-output", "special-repo"):
        special_trial(t, variant, base, src, truth)
        return
    # --- the flow: init, full (with a tracker), tracked incremental, list, restore, verify --against
    r = t.run(t.S("init", repo), cwd=cwd, timeout=timeout)
    if t.check("init", r, [repo]) != "right":
        return
    dn = ["--disk", disk_name] if disk_name is not None else []
    if tracker is not None:
        size = os.path.getsize(os.path.join(cwd, image) if not os.path.isabs(image) else image)
        r = t.run(t.S("tracker", "init", "--tracker", tracker, "--size", str(size)), cwd=cwd, timeout=timeout)
        if t.check("tracker init", r, [tracker]) != "right":
            tracker = None
    tr = ["--tracker", tracker] if tracker is not None else []
    sep = ["--"] if image.startswith(b"-") and rng.random() < 0.7 else []
    r = t.run(t.S("backup", "--repo", repo, "--full", "--json", *tr, *dn, *sep, image), cwd=cwd, timeout=timeout)
    holder = {}

    def v():
        j = r.json()
        holder["id"] = j["id"]
        want = disk_name if disk_name is not None else os.path.realpath(os.path.join(os.fsencode(cwd), image))
        if disk_name is None and os.path.islink(os.path.join(os.fsencode(cwd), image)):
            want = None  # either the link or its target
        got = j["disk"]["name"]
        if want is not None and not same_name(got, want) and not (disk_name == b"" and got):
            return "WRONG", "disk recorded as %r, expected %r" % (got, want)
        return "right", ""
    names = [image, repo, b"disk", b"name"] + ([tracker] if tracker else [])
    if t.check("backup --full", r, names, v) != "right":
        return
    ids = [holder["id"]]
    truths = {holder["id"]: truth}
    if tracker is not None:
        img_abs = os.path.join(os.fsencode(cwd), image)
        r = t.run(t.S("scribble", "--tracker", tracker, "--bytes", "128K", "--seed", gen_seed, *sep, image),
                  cwd=cwd, timeout=timeout)
        t.check("scribble --tracker", r, names)
        truth2 = content_digest(img_abs)
        r = t.run(t.S("backup", "--repo", repo, "--tracker", tracker, "--json", *dn, *sep, image), cwd=cwd, timeout=timeout)
        h2 = {}

        def v2():
            h2["id"] = r.json()["id"]
            return "right", ""
        t.check("backup --tracker", r, names, v2)
        if "id" in h2:
            ids.append(h2["id"])
            truths[h2["id"]] = truth2
    r = t.run(t.S("list", "--repo", repo, "--json"), cwd=cwd, timeout=timeout)

    def vl():
        got = [e["id"] for e in r.json()]
        return ("right", "") if sorted(got) == sorted(ids) else ("WRONG", "listed %s, made %s" % (got, ids))
    t.check("list --json", r, names, vl)
    r = t.run(t.S("list", "--repo", repo), cwd=cwd, timeout=timeout)
    t.check("list", r, names)
    for i in ids:
        r = t.run(t.S("restore", "--repo", repo, "--backup", i, *dn, out), cwd=cwd, timeout=timeout)
        out_abs = os.path.join(os.fsencode(cwd), out)

        def vr():
            return ("right", "") if content_digest(out_abs) == truths[i] else ("WRONG", "restore differs")
        t.check("restore", r, [out, repo], vr)
        if os.path.lexists(out_abs):
            if r.rc > 0:
                t.record("leftover", "output of a failed restore", r, os.fsdecode(out_abs))
            os.unlink(out_abs)
    if disk_name is not None:
        r = t.run(t.S("restore", "--repo", repo, "--disk", disk_name, out), cwd=cwd, timeout=timeout)
        out_abs = os.path.join(os.fsencode(cwd), out)
        t.check("restore --disk NAME", r, [out, repo, disk_name, "disk"],
                lambda: ("right", "") if content_digest(out_abs) == truths[ids[-1]] else ("WRONG", "restore --disk differs"))
        if os.path.lexists(out_abs):
            os.unlink(out_abs)
    r = t.run(t.S("verify", "--repo", repo, "--backup", ids[-1], "--against", *sep, image), cwd=cwd, timeout=timeout)
    t.check("verify --against", r, names)


def special_trial(t, variant, base, src, truth):
    rng = t.rng
    repo = os.path.join(base, b"repo")
    r = t.run(t.S("init", repo))
    t.check("init", r, [repo], fail_class="badmsg")
    r = t.run(t.S("backup", "--repo", repo, "--full", "--json", src))
    t.check("backup of the source", r, [src], fail_class="badmsg")
    fifo = os.path.join(base, b"fifo")
    os.mkfifo(fifo)
    d = os.path.join(base, b"adir")
    os.makedirs(d)
    timeout = 15
    if variant == "special-image":
        what = rng.choice([b"/dev/zero", b"/dev/null", b"/dev/urandom", fifo, d, os.path.join(base, b"missing.raw"),
                           b"empty", b"odd-size", b"symlink-loop", b"/proc/self/status"])
        if what == b"empty":
            what = os.path.join(base, b"empty.raw")
            open(what, "wb").close()
        elif what == b"odd-size":
            what = os.path.join(base, b"odd.raw")
            with open(what, "wb") as f:
                f.write(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 5000))))
        elif what == b"symlink-loop":
            what = os.path.join(base, b"loop")
            os.symlink(b"loop", what)
        t.kind = "image " + os.fsdecode(os.path.basename(what))
        # a regular file is a disk of the size stat reports (/proc files: 0)
        regular = os.path.isfile(what)
        for tool in ("backup", "extent-dump"):
            if tool == "backup":
                argv = t.S("backup", "--repo", repo, "--full", "--disk", "special", "--json", what)
            else:
                argv = t.D("--output", "json", what)
            r = t.run(argv, timeout=timeout)
            holder = {}

            def v():
                if not regular:
                    return "WRONG", "accepted %s as a disk" % os.fsdecode(what)
                if tool == "backup":
                    holder["id"] = r.json()["id"]
                return "right", ""
            t.check(tool + " of " + os.fsdecode(what), r, [what], v)
            if "id" in holder:
                # a raw image is a whole number of 512-byte sectors, as in QEMU:
                # the tail past a file's end reads as zeros
                t.restore_check("restore", os.fsdecode(repo), holder["id"], content_digest(what, pad_to=512), [repo])
    elif variant == "special-output":
        victim = os.path.join(base, b"victim.raw")
        with open(victim, "wb") as f:
            f.write(b"precious" * 512)
        what = rng.choice([b"/dev/null", b"/dev/zero", b"/dev/full", fifo, d, b"symlink", b"dangling",
                           b"existing", b"nodir", b"toolong"])
        extra = []
        if what == b"symlink":
            what = os.path.join(base, b"link-out")
            os.symlink(victim, what)
        elif what == b"dangling":
            what = os.path.join(base, b"dangling-out")
            os.symlink(os.path.join(base, b"nowhere.raw"), what)
        elif what == b"existing":
            what = victim
        elif what == b"nodir":
            what = os.path.join(base, b"no", b"such", b"dir", b"out.raw")
        elif what == b"toolong":
            what = os.path.join(base, b"/".join([b"d" * 200] * 25))
        if rng.random() < 0.3:
            extra = ["--force"]
        t.kind = "output " + os.fsdecode(os.path.basename(what)) + (" --force" if extra else "")
        before = open(victim, "rb").read()
        ids = [e["id"] for e in json.loads(t.run(t.S("list", "--repo", repo, "--json")).out or b"[]")]
        if not ids:
            return
        r = t.run(t.S("restore", "--repo", repo, "--backup", ids[0], *extra, what), timeout=timeout)

        def v():
            if what == victim and extra:
                return ("right", "") if content_digest(what) == truth else ("WRONG", "overwrite differs")
            return "WRONG", "restore to %s reported success" % os.fsdecode(what)
        t.check("restore to " + os.fsdecode(what)[-80:], r, [what, os.path.basename(what)], v)
        if not (what == victim and extra) and open(victim, "rb").read() != before:
            t.record("WRONG", "restore through a symlink", r, "the symlink's target was overwritten")
        if what == os.path.join(base, b"dangling-out") and os.path.exists(os.path.join(base, b"nowhere.raw")):
            t.record("WRONG", "restore through a dangling symlink", r, "created the symlink's target")
    else:
        what = rng.choice([b"/dev/null", fifo, os.path.join(base, b"file-repo"), b"/", b"/proc",
                           os.path.join(base, b"empty-dir"), os.path.join(base, b"missing")])
        if what.endswith(b"file-repo"):
            open(what, "wb").close()
        elif what.endswith(b"empty-dir"):
            os.makedirs(what)
        t.kind = "repo " + os.fsdecode(os.path.basename(what) or what)
        for argv in (t.S("list", "--repo", what), t.S("backup", "--repo", what, "--full", src),
                     t.S("restore", "--repo", what, os.path.join(base, b"o.raw")), t.S("verify", "--repo", what)):
            r = t.run(argv, timeout=timeout)
            if argv[1] == "list" and what.endswith(b"empty-dir"):
                t.check("list of an empty directory", r, [what])
                continue
            t.check(argv[1] + " --repo " + os.fsdecode(what), r, [what],
                    lambda: ("WRONG", "%s succeeded on a repository that is not one" % argv[1]))
            if os.path.lexists(os.path.join(base, b"o.raw")):
                os.unlink(os.path.join(base, b"o.raw"))


CATEGORIES = collections.OrderedDict([
    ("flip-archive", cat_flip_archive), ("flip-catalog", cat_flip_catalog), ("flip-marker", cat_flip_marker),
    ("flip-tracker", cat_flip_tracker), ("flip-qcow2", cat_flip_qcow2), ("kill9", cat_kill9),
    ("diskfull", cat_diskfull), ("concurrency", cat_concurrency), ("oddpaths", cat_oddpaths),
    ("flip-journal", cat_flip_journal),
])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, help="build directory (with tools/strata and tools/extent-dump)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: time)")
    ap.add_argument("--trials", type=int, default=2400, help="total trials, split by category weight")
    ap.add_argument("--only", default="", help="comma-separated categories")
    ap.add_argument("--work", default=None, help="parent of the campaign's temporary directory (default $TMPDIR)")
    ap.add_argument("--report", default=None, help="JSON report path (default WORK/report.json)")
    ap.add_argument("--timeout", type=int, default=120, help="seconds before a command counts as hung")
    ap.add_argument("--show-refusals", type=int, default=0, metavar="N",
                    help="print the N most common refusal messages per category")
    ap.add_argument("--trial", default=None, metavar="CAT:N",
                    help="run only trial N of category CAT (what a failure's re-run line prints)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (failing trials are always kept)")
    args = ap.parse_args()
    if args.seed is None:
        args.seed = int(time.time()) % 100000
    if args.trial:
        cat, _, n = args.trial.rpartition(":")
        if cat not in CATEGORIES or not n.isdigit():
            ap.error("--trial wants CAT:N, CAT one of %s" % ", ".join(CATEGORIES))
        args.trial = (cat, int(n))
        args.only = cat
    cats = [c for c in args.only.split(",") if c] or list(CATEGORIES)
    for c in cats:
        if c not in CATEGORIES:
            ap.error("unknown category %s (one of %s)" % (c, ", ".join(CATEGORIES)))
    if "diskfull" in cats and os.geteuid() != 0:
        ap.error("the diskfull category mounts tmpfs: run as root or leave it out with --only")
    if "flip-journal" in cats:
        if os.geteuid() != 0:
            ap.error("the flip-journal category mounts a loop device and freezes it: run as root "
                     "or leave it out with --only")
        for tool in ("mkfs.ext4", "losetup", "fsfreeze"):
            if not shutil.which(tool):
                ap.error("%s is needed for flip-journal (Debian e2fsprogs, mount, util-linux)" % tool)
    for tool in ("qemu-img", "qemu-io"):
        if not shutil.which(tool):
            ap.error("%s is needed (Debian package qemu-utils)" % tool)
    camp = Campaign(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unmount on the way out
    try:
        camp.run(cats)
    finally:
        camp.cleanup()
        if not args.keep:
            for name in os.listdir(camp.work):
                if name.startswith("fixture-"):
                    shutil.rmtree(os.path.join(camp.work, name), ignore_errors=True)
    bad = sum(1 for c in camp.cases)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

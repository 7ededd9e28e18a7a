#!/usr/bin/python3
"""The --json outputs cli_json_schema_test.py cannot make without a daemon or
root, validated against docs/schema/strata-cli.schema.json: live backups and
restores through NBD (qemu-nbd, started and stopped here by pid), serve
(nbdkit, started by strata serve --daemon, stopped by its pid file), and, as
root, mount / umount (FUSE) and freeze / freeze --exec / status / thaw /
thaw --all / checkpoint --quiesce on an ext4 loop mount this test makes and
removes. Every restore is also compared with the
disk. Exits 77 (skipped) when qemu-nbd or nbdkit is missing.

usage: cli_json_schema_live_test.py BINDIR SCHEMA"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import jsonschema

BIN, SCHEMA = sys.argv[1], sys.argv[2]
schema = json.load(open(SCHEMA))
failures = []
checked = set()
pids = []  # servers this test started: stopped by pid at the end

for tool in ("qemu-nbd", "qemu-img", "qemu-io", "nbdkit"):
    if not shutil.which(tool):
        print(f"SKIP: {tool} missing (scripts/setup.sh installs it)")
        sys.exit(77)


def validator(name):
    sub = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": "#/$defs/" + name}
    return jsonschema.Draft202012Validator(sub, format_checker=jsonschema.FormatChecker())


def run(args, expect=0, timeout=120):
    p = subprocess.run([os.path.join(BIN, "strata")] + args, capture_output=True, text=True,
                       timeout=timeout)
    if p.returncode != expect:
        failures.append(f"strata {' '.join(args)}: exit {p.returncode}, expected {expect}: "
                        f"{p.stderr.strip()} {p.stdout.strip()}")
    return p


def check(name, args, expect=0):
    p = run(args, expect)
    try:
        doc = json.loads(p.stdout)
    except json.JSONDecodeError as e:
        failures.append(f"strata {' '.join(args)}: stdout is not one JSON document ({e}): {p.stdout[:300]!r}")
        return None
    for err in sorted(validator(name).iter_errors(doc), key=str)[:3]:
        failures.append(f"strata {' '.join(args)} vs $defs/{name}: {err.message} at {list(err.absolute_path)}")
    checked.add(name)
    return doc


def qemu_nbd(sock, image, fmt, *extra):
    pidf = sock + ".pid"
    subprocess.run(["qemu-nbd", "-t", "--fork", "-k", sock, f"--pid-file={pidf}", "-f", fmt,
                    *extra, image], check=True)
    pid = int(open(pidf).read())
    pids.append(pid)
    return pid


def stop(pid):
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def same_guest(a, fa, b, fb):
    return subprocess.run(["qemu-img", "compare", "-q", "-f", fa, "-F", fb, a, b]).returncode == 0


def live(d):
    disk, qcow, repo = f"{d}/disk.raw", f"{d}/disk.qcow2", f"{d}/repo"
    run(["generate", "--size", "16M", "--fill", "0.3", "--seed", "7", disk])
    run(["init", repo])
    subprocess.run(["qemu-img", "convert", "-O", "qcow2", disk, qcow], check=True)
    subprocess.run(["qemu-img", "bitmap", "--add", qcow, "b1"], check=True)
    # Full backup of the export (b1 records writes from its point on), then
    # writes recorded in b1, then the incremental from b1.
    sock = f"{d}/src.sock"
    pid = qemu_nbd(sock, qcow, "qcow2", "-r")
    full = check("backup_live", ["backup", "--json", "--repo", repo, "--nbd",
                                 f"nbd+unix:///?socket={sock}", "--full", "--disk", "vm", "--end-point", "b1"])
    stop(pid)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 9 1M 256k", "-c", "write -z 4M 64k", qcow],
                   check=True, capture_output=True)
    pid = qemu_nbd(sock, qcow, "qcow2", "-r", "-B", "b1")
    inc = check("backup_live", ["backup", "--json", "--repo", repo, "--nbd",
                                f"nbd+unix:///?socket={sock}", "--bitmap", "b1", "--disk", "vm"])
    stop(pid)
    if full and inc and "disks" in full and "disks" in inc:
        modes = [full["disks"][0]["mode"], inc["disks"][0]["mode"]]
        if modes != ["full", "incremental"]:
            failures.append(f"expected a full backup, then an incremental from b1: modes {modes}")
        elif inc["disks"][0]["changed_bytes"] > (1 << 20):  # 256 KiB written, 64 KiB zeroed
            failures.append(f"the incremental read more than b1 marks: {inc['disks'][0]}")
    # Restores: into a new qcow2, and into a writable NBD export.
    out_q = f"{d}/r.qcow2"
    check("restore_live", ["restore", "--json", "--repo", repo, "--disk", "vm", "--format", "qcow2", out_q])
    if not same_guest(out_q, "qcow2", qcow, "qcow2"):
        failures.append("restore --format qcow2 differs from the disk")
    target = f"{d}/target.raw"
    with open(target, "wb") as f:
        f.truncate(16 << 20)
    tsock = f"{d}/dst.sock"
    pid = qemu_nbd(tsock, target, "raw")
    check("restore_live", ["restore", "--json", "--repo", repo, "--disk", "vm", "--nbd",
                           f"nbd+unix:///?socket={tsock}"])
    stop(pid)
    if not same_guest(target, "raw", qcow, "qcow2"):
        failures.append("restore --nbd differs from the disk")
    # serve --daemon: the JSON names the server's pid; the served point reads as the disk.
    ssock, spid = f"{d}/serve.sock", f"{d}/serve.pid"
    served = check("serve", ["serve", "--json", "--repo", repo, "--disk", "vm", "--socket", ssock,
                             "--daemon", "--pid-file", spid])
    if os.path.exists(spid):
        pid = int(open(spid).read())
        pids.append(pid)
        if served and served.get("pid") != pid:
            failures.append(f"serve --json pid {served.get('pid')} but the pid file says {pid}")
        got = f"{d}/served.raw"
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "raw",
                        f"nbd+unix:///?socket={ssock}", got], check=True)
        if not same_guest(got, "raw", qcow, "qcow2"):
            failures.append("the served point differs from the disk")
        stop(pid)
    else:
        failures.append("serve --daemon wrote no pid file")
    if os.geteuid() == 0:  # FUSE (/dev/fuse is root's here)
        mdir = f"{d}/m"
        os.mkdir(mdir)
        m = check("mount", ["mount", "--json", "--repo", repo, "--disk", "vm", mdir])
        if m:
            pids.append(m["pid"])
            if not same_guest(f"{mdir}/disk.raw", "raw", qcow, "qcow2"):
                failures.append("the mounted point differs from the disk")
            check("umount", ["umount", "--json", mdir])


def quiesce(d):
    img, mnt, state = f"{d}/fs.img", f"{d}/mnt", f"{d}/qstate"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", img], check=True)
    os.mkdir(mnt)
    subprocess.run(["mount", "-o", "loop", img, mnt], check=True)
    try:
        common = ["--json", "--state-dir", state]
        fr = check("freeze", ["freeze", *common, "--deadline", "60", mnt])
        check("status", ["status", *common])
        if fr:
            check("thaw", ["thaw", *common, str(fr["handle"])])
        check("freeze_exec", ["freeze", *common, "--deadline", "60", "--exec", f"sync -f {mnt}", mnt])
        check("freeze", ["freeze", *common, "--deadline", "60", mnt])
        check("thaw_all", ["thaw", *common, "--all"])
        trk = f"{d}/trk"  # on the test's directory, not on the frozen filesystem
        run(["tracker", "init", "--tracker", trk, "--size", "16M"])
        cp = check("checkpoint", ["checkpoint", *common, "--tracker", trk, "c1", "--quiesce", mnt,
                                  "--deadline", "60"])
        if cp and not cp.get("quiesced"):
            failures.append(f"checkpoint --quiesce {mnt} was not quiesced: {cp}")
        # Nothing stays frozen: a write to the filesystem completes.
        w = subprocess.run(["timeout", "10", "sh", "-c", f"echo x > {mnt}/probe && sync -f {mnt}"])
        if w.returncode != 0:
            failures.append(f"{mnt} still frozen after thaw --all (write exit {w.returncode})")
    finally:
        # Only matters when a check above failed: nothing of ours stays frozen or mounted.
        subprocess.run([os.path.join(BIN, "strata"), "thaw", "--all", "--state-dir", state], capture_output=True)
        subprocess.run(["fsfreeze", "--unfreeze", mnt], capture_output=True)
        for _ in range(50):
            if subprocess.run(["umount", mnt], capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
        else:
            failures.append(f"could not unmount {mnt}")


with tempfile.TemporaryDirectory(prefix="strata-json-live-") as d:
    try:
        live(d)
        if os.geteuid() == 0:
            quiesce(d)
        else:
            print("not run (needs root): mount, umount, freeze, freeze --exec, status, thaw, thaw --all, "
                  "checkpoint --quiesce")
    finally:
        for p in pids:
            stop(p)

print(f"validated outputs against {len(checked)} definitions: {' '.join(sorted(checked))}")
for f in failures:
    print("FAIL:", f)
sys.exit(1 if failures else 0)

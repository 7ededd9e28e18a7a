#!/usr/bin/python3
"""Validates the --json output of every strata and extent-dump command that
runs without a VM, a daemon or root against docs/schema/strata-cli.schema.json
(python3-jsonschema), on real repositories, trackers and images made here.
Also checks that with --json a failure prints {"error": ...} on stdout with
the exit status, and that --json --progress writes JSON lines on stderr.

usage: cli_json_schema_test.py BINDIR SCHEMA"""
import json
import os
import subprocess
import sys
import tempfile

import jsonschema

BIN, SCHEMA = sys.argv[1], sys.argv[2]
schema = json.load(open(SCHEMA))
failures = []
checked = set()


def validator(name):
    sub = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": "#/$defs/" + name}
    return jsonschema.Draft202012Validator(sub, format_checker=jsonschema.FormatChecker())


def run(args, expect=0, tool="strata"):
    p = subprocess.run([os.path.join(BIN, tool)] + args, capture_output=True, text=True)
    if p.returncode != expect:
        failures.append(f"{tool} {' '.join(args)}: exit {p.returncode}, expected {expect}: {p.stderr.strip()}")
    return p


def check(name, args, expect=0, tool="strata"):
    p = run(args, expect, tool)
    lines = p.stdout.strip().splitlines()
    try:
        doc = json.loads(p.stdout)
    except json.JSONDecodeError as e:
        failures.append(f"{tool} {' '.join(args)}: stdout is not one JSON document ({e}): {p.stdout[:300]!r}")
        return None
    errors = sorted(validator(name).iter_errors(doc), key=str)
    for err in errors[:3]:
        failures.append(f"{tool} {' '.join(args)} vs $defs/{name}: {err.message} at {list(err.absolute_path)}")
    checked.add(name)
    return doc


with tempfile.TemporaryDirectory(prefix="strata-json-") as d:
    disk, repo, trk, out = f"{d}/disk.raw", f"{d}/repo", f"{d}/trk", f"{d}/out.raw"
    check("generate", ["generate", "--json", "--size", "16M", "--fill", "0.3", "--seed", "3", disk])
    check("init", ["init", "--json", repo])
    check("tracker_init", ["tracker", "init", "--json", "--tracker", trk, "--size", "16M"])
    full = check("backup", ["backup", "--json", "--repo", repo, "--full", "--tracker", trk, disk])
    check("scribble", ["scribble", "--json", "--tracker", trk, "--fraction", "0.05", "--seed", "5", disk])
    inc = check("backup", ["backup", "--json", "--repo", repo, "--tracker", trk, disk])
    check("tracker_mark", ["tracker", "mark", "--json", "--tracker", trk, "0", "64k"])
    check("checkpoint", ["checkpoint", "--json", "--tracker", trk, "extra"])
    check("tracker_list", ["tracker", "list", "--json", "--tracker", trk])
    check("tracker_remove", ["tracker", "remove", "--json", "--tracker", trk, "extra"])
    check("tracker_resize", ["tracker", "resize", "--json", "--tracker", trk, "--size", "32M"])
    check("list", ["list", "--json", "--repo", repo])
    if full and inc:
        check("info", ["info", "--json", "--repo", repo, "--backup", inc["id"]])
        check("info", ["info", "--json", f"{repo}/archives/{full['id']}.sar"])
        check("extent_dump_archive", ["--json", f"{repo}/archives/{full['id']}.sar"], tool="extent-dump")
        check("restore", ["restore", "--json", "--repo", repo, "--backup", inc["id"], out])
        check("verify", ["verify", "--json", "--repo", repo])
        check("verify", ["verify", "--json", "--repo", repo, "--backup", inc["id"], "--against", out])
        # stored_bytes means the same in backup, list and info: the compressed payload.
        listed = {e["id"]: e for e in json.loads(run(["list", "--json", "--repo", repo]).stdout)}
        info = json.loads(run(["info", "--json", "--repo", repo, "--backup", inc["id"]]).stdout)
        for field in ("stored_bytes", "archive_bytes", "logical_bytes"):
            if not (inc[field] == info[field] == listed[inc["id"]][field]):
                failures.append(f"{field}: backup {inc[field]}, info {info[field]}, list {listed[inc['id']][field]}")
        check("merge_synthetic_full", ["merge", "--json", "--repo", repo, "--synthetic-full", inc["id"]])
        check("merge_remove", ["merge", "--json", "--repo", repo, "--remove", full["id"]])
        check("merge_resume", ["merge", "--json", "--repo", repo, "--resume"])
        check("repair", ["repair", "--json", "--repo", repo])
    check("extent_dump_map", ["--output", "json", disk], tool="extent-dump")
    check("extent_dump_runs", ["--json", "--tracker", trk, "--since", "strata-" + (inc or {"id": "x"})["id"]],
          tool="extent-dump") if inc else None
    qcow = f"{d}/disk.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", qcow, "16M"], check=True)
    subprocess.run(["qemu-img", "bitmap", "--add", qcow, "b1"], check=True)
    subprocess.run(["qemu-img", "snapshot", "-c", "s1", qcow], check=True)
    check("extent_dump_bitmaps", ["--json", "--list-bitmaps", qcow], tool="extent-dump")
    check("extent_dump_snapshots", ["--json", "--list-snapshots", qcow], tool="extent-dump")
    check("freeze_dry_run", ["freeze", "--json", "--dry-run", d])
    check("status", ["status", "--json", "--state-dir", f"{d}/qstate"])
    check("demo", ["demo", "--json", "--size", "16M", "--dir", f"{d}/demo"])

    # Failures with --json: {"error": ...} on stdout and the exit status.
    e = check("error", ["list", "--json", "--repo", f"{d}/no-such-repo"], expect=1)
    if e and e["error"]["exit_code"] != 1:
        failures.append(f"list of a missing repository: exit_code {e['error']['exit_code']}")
    e = check("error", ["backup", "--json", "--repo", repo, "--ful", disk], expect=2)
    if e and ("did you mean '--full'" not in e["error"]["message"] or e["error"]["code"] != "usage"):
        failures.append(f"usage error: {e}")
    check("error", ["tracker", "list", "--json", "--tracker", f"{d}/none"], expect=1)
    check("error", ["--json", "--list-bitmaps", disk], expect=1, tool="extent-dump")
    check("error", ["mount", "--json", "--repo", repo, f"{d}/no-such-dir"], expect=1)
    check("error", ["umount", "--json", d], expect=1)  # not a strata mount

    # --json --progress: progress as JSON lines on stderr, the result on stdout.
    p = run(["restore", "--json", "--progress", "--force", "--repo", repo, out])
    prog = [json.loads(line) for line in p.stderr.splitlines() if line.startswith("{")]
    if not prog:
        failures.append(f"restore --json --progress wrote no JSON progress lines: {p.stderr!r}")
    for doc in prog:
        for err in validator("progress").iter_errors(doc):
            failures.append(f"progress line {doc}: {err.message}")
    checked.add("progress")
    try:
        validator("restore").validate(json.loads(p.stdout))
    except Exception as ex:  # noqa: BLE001
        failures.append(f"restore --json --progress stdout: {ex}")

print(f"validated outputs against {len(checked)} definitions: {' '.join(sorted(checked))}")
for f in failures:
    print("FAIL:", f)
sys.exit(1 if failures else 0)

#!/usr/bin/env bash
# Live backups side by side (issue 14): strata against virtnbdbackup on the
# same running libvirt domain, the NBD read wall measured by nbdcopy from
# the same kind of export, and a QMP-only run on a large sparse image.
#
#   sudo bench/live_compare.sh [BUILD_DIR]   (default build/release)
#
# Env: SIZE (libvirt disk, default 4G), DATA (VM-like bytes in it, default
# 1G), QSIZE / QDATA (QMP run, default 32G / 2G), CHANGE_PCT (default 1: the
# share of 64 KiB data blocks rewritten before each incremental).
# Needs root and no libvirtd already running (it starts its own virtlogd and
# libvirtd and stops them by pid). Prints a markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build/release}
STRATA=$(realpath "$BUILD/tools/strata")
SIZE=${SIZE:-4G}; DATA=${DATA:-1G}; QSIZE=${QSIZE:-32G}; QDATA=${QDATA:-2G}; CHANGE_PCT=${CHANGE_PCT:-1}
URI=qemu:///system
[ "$(id -u)" -eq 0 ] || { echo "needs root" >&2; exit 1; }
[ -e /run/libvirt/libvirt-sock ] && { echo "a libvirtd is running; this script starts its own" >&2; exit 1; }
W=$(mktemp -d /var/tmp/strata-live-bench.XXXXXX); chmod 755 "$W"; export W
DOM=strata-bench-$$
cleanup() {
  virsh -q -c $URI destroy $DOM >/dev/null 2>&1 || true
  [ -n "${QEMU_PID:-}" ] && kill "$QEMU_PID" 2>/dev/null || true
  for p in "$W/libvirtd.pid" "$W/virtlogd.pid"; do [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true; done
  sleep 1; rm -rf "$W"
}
trap cleanup EXIT
now() { date +%s.%N; }
secs() { printf "%.2f" "$(echo "$(now) - $1" | bc)"; }
bytes() { du -sb "$1" | cut -f1; }
mib() { echo "scale=1; $1 / 1048576" | bc; }

# VM-like data: a tar of /usr (ratio ~3 with zstd -1), in a sparse disk.
make_disk() {  # PATH SIZE DATA
  tar cf - /usr 2>/dev/null | head -c "$(numfmt --from=iec "$3")" > "$W/data.raw" || true
  truncate -s "$2" "$W/data.raw"
  qemu-img convert -q -f raw -O qcow2 "$W/data.raw" "$1"; rm -f "$W/data.raw"
}

# Rewrites CHANGE_PCT% of the 64 KiB blocks holding data, through QEMU.
change_blocks() {  # QMP-COMMAND-RUNNER (python snippet mode) DRIVE DATA
  /usr/bin/python3 - "$@" <<'EOF'
import json, random, socket, subprocess, sys
mode, target, drive, data, pct = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
blocks = data // 65536
picks = random.Random(7).sample(range(blocks), max(1, int(blocks * pct / 100)))
# New data: 64 KiB slices of /usr files (VM-like), readable by QEMU.
import glob, os
srcs = []
for i, f in enumerate(sorted(glob.glob('/usr/lib/x86_64-linux-gnu/*.so*'))[:64]):
    data = open(f, 'rb').read()[:65536]
    if len(data) < 65536: continue
    p = os.path.join(os.environ['W'], 'blk%d' % i); open(p, 'wb').write(data); os.chmod(p, 0o644); srcs.append(p)
rnd = random.Random(11)
cmds = ['qemu-io %s "write -s %s %d 65536"' % (drive, rnd.choice(srcs), b * 65536) for b in picks]
if mode == 'libvirt':
    import libvirt, libvirt_qemu
    c = libvirt.open('qemu:///system'); d = c.lookupByName(target)
    for cmd in cmds: libvirt_qemu.qemuMonitorCommand(d, cmd, libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP)
else:
    s = socket.socket(socket.AF_UNIX); s.connect(target); f = s.makefile('rw'); f.readline()
    def ex(c, a=None):
        m = {'execute': c}
        if a is not None: m['arguments'] = a
        f.write(json.dumps(m) + '\n'); f.flush()
        while 'event' in (r := json.loads(f.readline())): pass
        return r
    ex('qmp_capabilities')
    for cmd in cmds: ex('human-monitor-command', {'command-line': cmd})
print(len(cmds))
EOF
}

row() { printf '| %s | %s | %s | %s |\n' "$1" "$2" "$3" "$4"; }

echo "machine: $(nproc) cores, $(uname -r), $(df -T "$W" | tail -1 | awk '{print $2}') at $W, load $(cut -d' ' -f1 /proc/loadavg)"
echo
# ---- libvirt domain ----
mkdir -p /var/log/libvirt/qemu
virtlogd -d -p "$W/virtlogd.pid"; libvirtd -d -p "$W/libvirtd.pid"
for i in $(seq 100); do virsh -c $URI version >/dev/null 2>&1 && break; sleep 0.1; done
make_disk "$W/disk.qcow2" "$SIZE" "$DATA"
cat > "$W/dom.xml" <<EOF
<domain type='qemu'><name>$DOM</name><memory unit='MiB'>256</memory>
<os><type arch='x86_64' machine='q35'>hvm</type></os><devices>
<emulator>/usr/bin/qemu-system-x86_64</emulator>
<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='$W/disk.qcow2'/>
<target dev='sda' bus='sata'/></disk></devices></domain>
EOF
virsh -q -c $URI create "$W/dom.xml" >/dev/null
"$STRATA" init "$W/repo" >/dev/null
DATAB=$(numfmt --from=iec "$DATA")
echo "libvirt domain (TCG q35, SATA qcow2 disk of $SIZE holding $DATA of a tar of /usr):"
echo
row "what" "time (s)" "stored (MiB)" "note"; row "---" "---" "---" "---"
# NBD read wall: nbdcopy from a pull-mode export of the same disk.
mkdir -p "$W/wall"; chown libvirt-qemu:libvirt-qemu "$W/wall"  # QEMU creates the socket there
cat > "$W/b.xml" <<EOF
<domainbackup mode='pull'><server transport='unix' socket='$W/wall/wall.sock'/>
<disks><disk name='sda' backup='yes' type='file'><scratch file='$W/wall/scratch.qcow2'/></disk></disks></domainbackup>
EOF
virsh -q -c $URI backup-begin $DOM "$W/b.xml" >/dev/null
t=$(now); nbdcopy --destination-is-zero "nbd+unix:///sda?socket=$W/wall/wall.sock" null: ; row "nbdcopy (read wall)" "$(secs $t)" "-" "reads the whole export, holes cheap"
virsh -q -c $URI domjobabort $DOM >/dev/null
qemu-img convert -U -f qcow2 -O raw "$W/disk.qcow2" "$W/all.raw"; head -c "$DATAB" "$W/all.raw" > "$W/data.bin"; rm -f "$W/all.raw"
t=$(now); zstd -1 -T2 -q -c "$W/data.bin" > /dev/null; row "zstd -1 -T2 of the data (compressor wall)" "$(secs $t)" "-" "from the page cache"; rm -f "$W/data.bin"
# virtnbdbackup refuses a domain with checkpoints it did not make, so its
# chains run first, then its checkpoints' metadata goes and strata runs.
t=$(now); virtnbdbackup -q -d $DOM -l full -o "$W/vnb" >>"$W/vnb.log" 2>&1 || { tail -5 "$W/vnb.log" >&2; exit 1; }; row "virtnbdbackup -l full" "$(secs $t)" "$(mib "$(bytes "$W/vnb")")" ""
n=$(change_blocks libvirt $DOM "-d sata0-0-0" "$DATAB" "$CHANGE_PCT")
before=$(bytes "$W/vnb")
t=$(now); virtnbdbackup -q -d $DOM -l inc -o "$W/vnb" >>"$W/vnb.log" 2>&1 || { tail -5 "$W/vnb.log" >&2; exit 1; }; row "virtnbdbackup -l inc" "$(secs $t)" "$(mib $(( $(bytes "$W/vnb") - before )))" "$n blocks of 64 KiB changed"
t=$(now); virtnbdbackup -q -d $DOM -l full -o "$W/vnbz" --compress >>"$W/vnb.log" 2>&1 || { tail -5 "$W/vnb.log" >&2; exit 1; }; row "virtnbdbackup -l full --compress" "$(secs $t)" "$(mib "$(bytes "$W/vnbz")")" "lz4"
n=$(change_blocks libvirt $DOM "-d sata0-0-0" "$DATAB" "$CHANGE_PCT")
before=$(bytes "$W/vnbz")
t=$(now); virtnbdbackup -q -d $DOM -l inc -o "$W/vnbz" --compress >>"$W/vnb.log" 2>&1 || { tail -5 "$W/vnb.log" >&2; exit 1; }; row "virtnbdbackup -l inc --compress" "$(secs $t)" "$(mib $(( $(bytes "$W/vnbz") - before )))" "$n blocks changed"
for c in $(virsh -q -c $URI checkpoint-list --name $DOM); do virsh -q -c $URI checkpoint-delete $DOM "$c" --metadata >/dev/null; done
pipe() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1]))['disks'][0]; print('%.2f s in the pipeline, read %.0f MiB' % (d['seconds'], d['read_bytes']/1048576))" "$1"; }
t=$(now); "$STRATA" backup --repo "$W/repo" --libvirt $DOM --uri $URI --state-dir "$W/state" --json > "$W/s.json"
row "strata full" "$(secs $t)" "$(mib "$(bytes "$W/repo/archives")")" "zstd -1; $(pipe "$W/s.json")"
n=$(change_blocks libvirt $DOM "-d sata0-0-0" "$DATAB" "$CHANGE_PCT")
before=$(bytes "$W/repo/archives")
t=$(now); "$STRATA" backup --repo "$W/repo" --libvirt $DOM --uri $URI --state-dir "$W/state" --json > "$W/s.json"
row "strata inc" "$(secs $t)" "$(mib $(( $(bytes "$W/repo/archives") - before )))" "$n blocks changed; $(pipe "$W/s.json")"
t=$(now); "$STRATA" restore --repo "$W/repo" --format qcow2 "$W/r.qcow2" >/dev/null; row "strata restore --format qcow2" "$(secs $t)" "-" "chain of 2"
t=$(now); virtnbdrestore -i "$W/vnb" -o "$W/vr" >>"$W/vnb.log" 2>&1 || { tail -5 "$W/vnb.log" >&2; exit 1; }; row "virtnbdrestore" "$(secs $t)" "-" "uncompressed chain of 2"
virsh -q -c $URI destroy $DOM >/dev/null
echo
# ---- QMP on a large sparse image ----
echo "QMP only: qemu-system-x86_64 -machine none, a sparse $QSIZE qcow2 holding $QDATA of a tar of /usr:"
echo
make_disk "$W/q.qcow2" "$QSIZE" "$QDATA"
qemu-system-x86_64 -machine none -nodefaults -display none -accel tcg -qmp unix:$W/qmp.sock,server=on,wait=off \
  -qmp unix:$W/t.sock,server=on,wait=off -drive if=none,id=drive0,node-name=disk0,file=$W/q.qcow2,format=qcow2 \
  > "$W/qemu.log" 2>&1 &
QEMU_PID=$!
for i in $(seq 100); do [ -S "$W/t.sock" ] && break; sleep 0.1; done
"$STRATA" init "$W/qrepo" >/dev/null
row "what" "time (s)" "stored (MiB)" "note"; row "---" "---" "---" "---"
qmp() {  # SOCKET JSON...: runs QMP commands in order
  /usr/bin/python3 - "$@" <<'EOF'
import json, socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); f = s.makefile('rw'); f.readline()
for c in ['{"execute":"qmp_capabilities"}'] + sys.argv[2:]:
    f.write(c + '\n'); f.flush()
    while 'event' in (r := json.loads(f.readline())): pass
    if 'error' in r: sys.exit('QMP: ' + json.dumps(r))
EOF
}
# The read wall: QEMU's own NBD server exporting the node read-only.
qmp "$W/t.sock" '{"execute":"nbd-server-start","arguments":{"addr":{"type":"unix","data":{"path":"'"$W"'/qn.sock"}}}}' \
  '{"execute":"block-export-add","arguments":{"type":"nbd","id":"wall","node-name":"disk0","name":"wall"}}'
t=$(now); nbdcopy --destination-is-zero "nbd+unix:///wall?socket=$W/qn.sock" null: ; row "nbdcopy (read wall, QEMU's NBD server)" "$(secs $t)" "-" ""
qmp "$W/t.sock" '{"execute":"block-export-del","arguments":{"id":"wall"}}' '{"execute":"nbd-server-stop"}'
qemu-img convert -U -f qcow2 -O raw "$W/q.qcow2" "$W/all.raw"; head -c "$(numfmt --from=iec "$QDATA")" "$W/all.raw" > "$W/data.bin"; rm -f "$W/all.raw"
t=$(now); zstd -1 -T2 -q -c "$W/data.bin" > /dev/null; row "zstd -1 -T2 of the data (compressor wall)" "$(secs $t)" "-" "from the page cache"; rm -f "$W/data.bin"
t=$(now); "$STRATA" backup --repo "$W/qrepo" --qmp "$W/qmp.sock" --node disk0 --state-dir "$W/qstate" --json > "$W/s.json"
row "strata --qmp full" "$(secs $t)" "$(mib "$(bytes "$W/qrepo/archives")")" "$(pipe "$W/s.json")"
n=$(change_blocks qmp "$W/t.sock" drive0 "$(numfmt --from=iec "$QDATA")" "$CHANGE_PCT")
before=$(bytes "$W/qrepo/archives")
t=$(now); "$STRATA" backup --repo "$W/qrepo" --qmp "$W/qmp.sock" --node disk0 --state-dir "$W/qstate" --json > "$W/s.json"
row "strata --qmp inc ($n blocks changed)" "$(secs $t)" "$(mib $(( $(bytes "$W/qrepo/archives") - before )))" "$(pipe "$W/s.json")"

#!/bin/busybox sh
# The guest's /init, in a busybox initramfs built by matrix.py (with /modules/order and the
# modules it names). It loads what 9p and the tests need, mounts the host's / (read-only 9p,
# tag "root") as the root, the results share (read-write 9p, tag "results") at /tmp/vmtest,
# runs /tmp/vmtest/run.sh chrooted there, writes its exit code to /tmp/vmtest/rc and powers off.
# Anything that goes wrong ends in a panic (panic=-1 + -no-reboot end qemu) or a missing rc
# file: the host counts both as a failed run, never a skip.
/bin/busybox --install -s /bin
export PATH=/bin
R=/newroot
SHARE=/tmp/vmtest

fail() {
  echo "vmtest-init: $*"
  exit 1 # PID 1 exiting panics the kernel, which ends qemu
}

mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

# Modules in modules.dep order (matrix.py wrote the order); the guest cannot load modules
# from the host's /lib/modules, which is for another kernel.
while read -r ko; do
  insmod "/modules/$ko" || fail "insmod $ko failed"
done </modules/order

mkdir -p $R
# cache=loose: the root never changes under the guest, and imports get ~2.5x faster.
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 root $R ||
  fail "cannot mount the host's / over 9p"

mount -t proc proc $R/proc
mount -t sysfs sys $R/sys
mount -t devtmpfs dev $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 shm $R/dev/shm
mount -t tmpfs -o mode=0755 run $R/run
mount -t tmpfs -o mode=1777 tmp $R/tmp
# /root stays the host's (read-only): the venv's interpreter may live there (pyenv).
# After the /tmp tmpfs, or it would hide the share.
mkdir -p $R$SHARE
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=512000 results $R$SHARE ||
  fail "cannot mount the results share"
# The repository at its own path (vmtest.repo=, see vm.py), after the tmpfs mounts: a
# clone under /tmp or /run would be hidden otherwise. Made read-only like the root.
repo=$(sed -n 's/.*vmtest\.repo=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$repo" ]; then
  [ -d "$R$repo" ] || mkdir -p "$R$repo" || fail "cannot make $repo in the guest"
  mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 repo "$R$repo" ||
    fail "cannot mount the repository at $repo"
fi
mount -t tracefs tracefs $R/sys/kernel/tracing || echo "vmtest-init: no tracefs"
mount -t debugfs debugfs $R/sys/kernel/debug || echo "vmtest-init: no debugfs"
mount -t bpf bpffs $R/sys/fs/bpf || echo "vmtest-init: no bpffs"
mount -t cgroup2 cgroup2 $R/sys/fs/cgroup || echo "vmtest-init: no cgroup2"
mount -t securityfs securityfs $R/sys/kernel/security || echo "vmtest-init: no securityfs"
hostname vmtest
ip link set lo up

echo "vmtest-init: $(uname -r) up after $(cut -d' ' -f1 /proc/uptime) s, running run.sh"
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  TERM=dumb TMPDIR=/tmp chroot $R /bin/bash $SHARE/run.sh </dev/null
rc=$?
echo "$rc" >$R$SHARE/rc
sync
umount $R$SHARE
echo "vmtest-init: run.sh exited $rc after $(cut -d' ' -f1 /proc/uptime) s"
poweroff -f

#!/bin/sh
# /init of the guests `cargo xtask kernels` boots: mount the host's root read-only over 9p,
# load the guest kernel's own modules from its unpacked package (on that root), then chroot
# into the host's root and run the matrix's script. Kernel parameters:
#   netcheck.out=DIR   the run's folder on the host (shared read-write: run.sh, results)
#   netcheck.kroot=DIR the unpacked kernel package on the host (its lib/modules)
#   netcheck.run=NAME  the script in the run's folder to run (run.sh; the two-kernel lab's
#                      guests share one folder and run local.sh and peer.sh)
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in /mods/*.ko; do insmod "$m" || echo "netcheck-guest: insmod $m failed"; done
arg() { tr ' ' '\n' < /proc/cmdline | sed -n "s/^$1=//p"; }
OUT=$(arg netcheck.out)
KROOT=$(arg netcheck.kroot)
RUN=$(arg netcheck.run)
REL=$(uname -r)
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288 host /mnt; then
    echo "netcheck-guest: the host's root did not mount over 9p"
    poweroff -f
fi
# The guest's modules, for modprobe here and for the kernel's own requests (iptables asks for
# xt_* and nft_* modules as rules use them).
mkdir -p "/lib/modules/$REL"
mount --bind "/mnt$KROOT/lib/modules/$REL" "/lib/modules/$REL"
echo /sbin/modprobe > /proc/sys/kernel/modprobe
for m in $(cat "/mnt$OUT/modules"); do modprobe "$m" || echo "netcheck-guest: modprobe $m failed"; done
ip link set lo up
mount -t proc proc /mnt/proc
mount -t sysfs sys /mnt/sys
mount -t devtmpfs dev /mnt/dev
mount -t tmpfs tmp /mnt/tmp
mount -t tmpfs run /mnt/run
mount -t bpf bpf /mnt/sys/fs/bpf
mount -t tracefs tracefs /mnt/sys/kernel/tracing
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 out "/mnt$OUT"
echo "netcheck-guest: $REL up"
chroot /mnt /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root /bin/bash "$OUT/${RUN:-run.sh}"
echo "netcheck-guest: done ($?)"
poweroff -f

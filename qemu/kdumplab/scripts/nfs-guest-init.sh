#!/bin/sh
# /init of the NFS client guest (kdumplab/nfsguest.py): the host's root
# filesystem over 9p, read-only, as the guest's userland (chroot), the test's
# work folder over 9p read-write at the same path, the network to the host's
# NFS server through slirp's guestfwd (10.0.2.100), then the test's script.
. /etc/crashlab/common.sh
setup_base
load_modules
ip link set lo up
ip link set eth0 up || fail "no eth0"
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
[ -n "$NFSGUEST_WORK" ] || fail "NFSGUEST_WORK not on the command line"
mkdir -p /host
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144 hostroot /host || fail "9p hostroot"
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
mount -t tmpfs tmpfs /host/run
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 work "/host$NFSGUEST_WORK" || fail "9p work"
say "guest ready at $(uptime_s)s"
chroot /host /bin/sh "$NFSGUEST_WORK/guest.sh" > "/host$NFSGUEST_WORK/guest.out" 2>&1
say "NFSGUEST-DONE $? at $(uptime_s)s"
sync
poweroff -f
sleep 30

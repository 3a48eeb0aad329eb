# Shared shell functions for both crash-lab initramfs images (busybox ash).

say() { echo "CRASHLAB: $*"; }

uptime_s() { cut -d' ' -f1 /proc/uptime; }

fail() {
	echo "CRASHLAB-ERROR: $*"
	sync
	poweroff -f
	sleep 30
}

setup_base() {
	/bin/busybox --install -s /bin
	export PATH=/bin:/sbin
	mkdir -p /proc /sys /dev /tmp /mnt /run
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	mount -t devtmpfs devtmpfs /dev 2>/dev/null
	mkdir -p /dev/shm /dev/pts
}

load_modules() {
	# /etc/crashlab/modules lists decompressed .ko files in dependency order
	n=0
	while read -r mod; do
		[ -n "$mod" ] || continue
		insmod "/lib/modules/crashlab/$mod" 2>/tmp/insmod.err || {
			grep -q "File exists" /tmp/insmod.err || say "insmod $mod: $(cat /tmp/insmod.err)"
		}
		n=$((n + 1))
	done < /etc/crashlab/modules
	say "loaded $n modules at $(uptime_s)s"
}

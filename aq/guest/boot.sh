# aq: per-VM settings, run at boot by /etc/init.d/aq-guest (delivered through fw_cfg).
# @NAME@ is filled in by the host.
# Builtins where they do (`read`, not `cat`): each program costs 10-20 ms under TCG.
name='@NAME@'
current=
read -r current </etc/hostname 2>/dev/null
if [ -n "$name" ] && [ "$current" != "$name" ]; then
	echo "$name" > /etc/hostname
fi

# Grow the root partition and filesystem to fill the disk (aq new --disk-size).
root=$(awk '$2 == "/" && $1 ~ /^\/dev\// { dev = $1 } END { print dev }' /proc/mounts)
case "$root" in
/dev/root | "")
	spec=$(sed -n 's/.*root=\([^ ]*\).*/\1/p' /proc/cmdline)
	case "$spec" in
	UUID=* | LABEL=*) root=$(findfs "$spec" 2>/dev/null) ;;
	/dev/*) root=$spec ;;
	esac
	;;
esac
case "$root" in
/dev/vd[a-z][0-9]* | /dev/sd[a-z][0-9]* | /dev/nvme*p[0-9]*)
	part=${root##*[!0-9]}
	disk=${root%"$part"}
	disk=${disk%p}
	# Only when the disk grew: sysfs says where the partition ends (512-byte sectors),
	# which costs nothing, while growpart runs sfdisk (once 87 s of soft lockups under TCG).
	blocks=/sys/class/block
	total=0 start=0 size=0
	read -r total <"$blocks/${disk#/dev/}/size" 2>/dev/null
	read -r start <"$blocks/${root#/dev/}/start" 2>/dev/null
	read -r size <"$blocks/${root#/dev/}/size" 2>/dev/null
	# More than 1 MiB after the partition's end (a GPT's backup table is 33 sectors).
	if [ $((total - start - size)) -gt 2048 ] && command -v growpart >/dev/null &&
		growpart "$disk" "$part" >/dev/null 2>&1; then
		resize2fs "$root" >/dev/null 2>&1
	fi
	;;
esac

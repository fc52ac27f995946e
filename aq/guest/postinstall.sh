#!/bin/sh
# aq: finish a base install made by `setup-alpine -e -f`: add what aq needs to the
# installed system (console login, command channel, power button, growable root).
# Runs in the installer's live system as root; $1 is the serial console (ttyS0...),
# $2 (optional) a scratch disk that receives the installed /boot for the host.
set -eu
tty=$1
mnt=/mnt
say() { printf 'aq-postinstall: %s\n' "$*"; }

# Unmount whatever the installer left mounted under /mnt, deepest first.
for m in $(awk -v m="$mnt" '$2 == m || index($2, m "/") == 1 { print $2 }' /proc/mounts | sort -r); do
	umount "$m"
done

# Find the installed root: the partition that holds /etc/alpine-release.
root=""
for part in /dev/vda[0-9]*; do
	[ -b "$part" ] || continue
	if mount -o ro "$part" "$mnt" 2>/dev/null; then
		[ -f "$mnt/etc/alpine-release" ] && root=$part
		umount "$mnt"
	fi
done
[ -n "$root" ] || { say "no installed root filesystem found on /dev/vda"; exit 1; }
mount "$root" "$mnt"
for point in /boot /boot/efi; do
	spec=$(awk -v p="$point" '$2 == p { print $1 }' "$mnt/etc/fstab")
	[ -n "$spec" ] || continue
	dev=$spec
	case "$spec" in UUID=* | LABEL=*) dev=$(findfs "$spec") ;; esac
	mount "$dev" "$mnt$point"
done
say "installed root is $root"

# 1. A login on the serial console.
if ! grep -q "^$tty::" "$mnt/etc/inittab"; then
	if grep -q "^#$tty::" "$mnt/etc/inittab"; then
		sed -i "s|^#$tty::|$tty::|" "$mnt/etc/inittab"
	else
		echo "$tty::respawn:/sbin/getty -L 115200 $tty vt100" >> "$mnt/etc/inittab"
	fi
fi

# 1b. No gettys on the virtual consoles (tty1-tty6): an aq VM has no display (QEMU
# runs with -nodefaults -display none), so nobody can reach them, and init starting
# six of them took 1.3-1.7 s of every TCG boot, just before the agent (three
# alternating boots each, bench/BOOT-STALLS.md). The serial console keeps its login.
sed -i 's|^\(tty[0-9][0-9]*::\)|#\1|' "$mnt/etc/inittab"

# 2. The command channel (aq exec) and per-VM settings, both handed over by the host.
install -d "$mnt/usr/libexec/aq"
install -m 0755 /tmp/aq/agent-bootstrap.sh "$mnt/usr/libexec/aq/agent-bootstrap"
install -m 0755 /tmp/aq/aq-guest.init "$mnt/etc/init.d/aq-guest"
grep -q "aq/agent-bootstrap" "$mnt/etc/inittab" ||
	echo "::respawn:/usr/libexec/aq/agent-bootstrap" >> "$mnt/etc/inittab"
chroot "$mnt" rc-update add aq-guest boot

# 3. The ACPI power button powers off (aq stop sends it).
if [ ! -e "$mnt/etc/acpi/PWRF/00000080" ]; then
	install -d "$mnt/etc/acpi/PWRF"
	printf '#!/bin/sh\npoweroff\n' > "$mnt/etc/acpi/PWRF/00000080"
	chmod 0755 "$mnt/etc/acpi/PWRF/00000080"
fi
chroot "$mnt" rc-update add acpid default

# 4. Modules for aq's devices, when they are modules in this kernel.
for mod in virtio_console pvpanic-pci qemu_fw_cfg button evdev; do
	if find "$mnt/lib/modules" -name "$mod.ko*" 2>/dev/null | grep -q . &&
		! grep -qx "$mod" "$mnt/etc/modules" 2>/dev/null; then
		echo "$mod" >> "$mnt/etc/modules"
	fi
done

# 5. Tools to grow the root filesystem when a VM's disk is bigger than the base.
pkgs=""
for pair in growpart:cloud-utils-growpart resize2fs:e2fsprogs-extra sfdisk:sfdisk partx:partx; do
	chroot "$mnt" sh -c "command -v ${pair%%:*}" > /dev/null 2>&1 || pkgs="$pkgs ${pair#*:}"
done
if [ -n "$pkgs" ]; then
	say "installing$pkgs"
	cp /etc/resolv.conf "$mnt/etc/resolv.conf" 2>/dev/null || true
	mount -t proc proc "$mnt/proc"
	# Not fatal: without them a VM still works, its root just does not grow.
	chroot "$mnt" apk add --no-progress $pkgs || say "warning: could not install$pkgs"
	umount "$mnt/proc"
fi

# 6. The kernel talks on the serial console, now and after kernel upgrades.
if [ -f "$mnt/etc/update-extlinux.conf" ] &&
	! grep -q "^default_kernel_opts=.*console=$tty" "$mnt/etc/update-extlinux.conf"; then
	sed -i "s|^default_kernel_opts=\"\(.*\)\"|default_kernel_opts=\"\1 console=$tty,115200\"|" \
		"$mnt/etc/update-extlinux.conf"
	sed -i "s|^serial_port=.*|serial_port=0|" "$mnt/etc/update-extlinux.conf"
fi
if [ -f "$mnt/boot/extlinux.conf" ] && ! grep -q "console=$tty" "$mnt/boot/extlinux.conf"; then
	sed -i "s|^\([[:space:]]*APPEND .*\)$|\1 console=$tty,115200|" "$mnt/boot/extlinux.conf"
fi
if [ -f "$mnt/etc/default/grub" ] && ! grep -q "console=$tty" "$mnt/etc/default/grub"; then
	sed -i "s|^GRUB_CMDLINE_LINUX_DEFAULT=\"\(.*\)\"|GRUB_CMDLINE_LINUX_DEFAULT=\"\1 console=$tty,115200\"|" \
		"$mnt/etc/default/grub"
	if chroot "$mnt" sh -c "command -v grub-mkconfig" > /dev/null 2>&1; then
		mount -t proc proc "$mnt/proc"
		chroot "$mnt" grub-mkconfig -o /boot/grub/grub.cfg
		umount "$mnt/proc"
	fi
fi
# setup-disk's grub_serial_config strips only "ttyS" from the unit, so a PL011
# (aarch64) gets `serial --unit=ttyAMA0`, which GRUB rejects. Under QEMU's edk2 the
# firmware console already is that serial port, so GRUB's serial terminal and its
# video setup go (text console only: aq has no display device). The "interrupt storm"
# once seen after GRUB (soft lockups at OpenRC's start) was not GRUB's doing: it was
# QEMU 7.2's TCG with its never-flushed 1 GiB translation cache, fixed on the command
# line (aq.qemu.cmdline.accel_option).
if [ -f "$mnt/etc/default/grub" ] && grep -q '^GRUB_SERIAL_COMMAND=.*--unit=tty' "$mnt/etc/default/grub"; then
	sed -i -e '/^GRUB_SERIAL_COMMAND=/d' -e '/^GRUB_TERMINAL_INPUT=/d' -e '/^GRUB_TERMINAL_OUTPUT=/d' \
		"$mnt/etc/default/grub"
fi
if [ -f "$mnt/boot/grub/grub.cfg" ] && grep -q '^serial .*--unit=tty' "$mnt/boot/grub/grub.cfg"; then
	sed -i -e '/^serial .*--unit=tty/d' -e '/^terminal_input console serial$/d' \
		-e '/^terminal_output console serial$/d' -e '/^[[:space:]]*load_video$/d' \
		"$mnt/boot/grub/grub.cfg"
fi
# grub.cfg itself, whoever wrote it (GRUB's linux lines are indented with tabs).
if [ -f "$mnt/boot/grub/grub.cfg" ] && ! grep -q "console=$tty" "$mnt/boot/grub/grub.cfg"; then
	sed -i "s|^\([[:space:]]*linux[[:space:]].*\)$|\1 console=$tty,115200|" "$mnt/boot/grub/grub.cfg"
fi

# 7. UEFI firmware without saved boot entries looks only at the removable path.
# FAT ignores case, and setup-disk writes EFI/boot/bootaa64.efi in lower case.
efi="$mnt/boot/efi/EFI"
[ -d "$efi" ] || efi="$mnt/boot/EFI"
if [ -d "$efi" ] && [ -z "$(find "$efi" -maxdepth 2 -ipath '*/boot/boot*.efi')" ]; then
	loader=$(find "$efi" -iname 'grub*.efi' | head -n 1)
	if [ -n "$loader" ]; then
		install -d "$efi/BOOT"
		case "$(uname -m)" in
		aarch64) cp "$loader" "$efi/BOOT/BOOTAA64.EFI" ;;
		*) cp "$loader" "$efi/BOOT/BOOTX64.EFI" ;;
		esac
	fi
fi

# 8. Each VM gets its own SSH host keys and machine id at first boot.
rm -f "$mnt"/etc/ssh/ssh_host_*
[ -f "$mnt/etc/machine-id" ] && : > "$mnt/etc/machine-id"

# 8b. No ARP probe of the leased address: QEMU's user network holds only the guest
# and QEMU's own addresses, so no other host can hold it, and dhcpcd's probe adds
# about 5 s to every boot (measured under TCG, and the same on a fast accelerator).
# No random delay before the first DHCP message either (0-1 s of every boot): it
# spreads many clients' starts over time on a shared network, and QEMU's DHCP server
# serves this guest alone.
if [ -f "$mnt/etc/dhcpcd.conf" ]; then
	for option in noarp nodelay; do
		if ! grep -qx "$option" "$mnt/etc/dhcpcd.conf"; then
			printf '\n# aq: QEMU user networking, no other host on the link (see aq postinstall)\n%s\n' \
				"$option" >> "$mnt/etc/dhcpcd.conf"
		fi
	done
fi

# 8c. An initramfs for the disks aq gives a VM (virtio, ext4) and nothing more:
# setup-disk's default adds ATA, SCSI, USB, NVMe, MMC, RAID, KMS and keymaps, and the
# initramfs then unpacks and probes them at every boot (a third of its size, about
# 2 s of a TCG boot; bench/BOOT-STALLS.md). Kernel upgrades keep this list.
conf="$mnt/etc/mkinitfs/mkinitfs.conf"
if [ -f "$conf" ] && ! grep -q '^features="base ext4 virtio"$' "$conf"; then
	sed -i 's/^features=.*/features="base ext4 virtio"/' "$conf"
	mount -t proc proc "$mnt/proc"
	mount -o bind /dev "$mnt/dev"
	for kver in $(ls "$mnt/lib/modules"); do
		flavor=${kver##*-}
		out=/boot/initramfs-$flavor
		[ -f "$mnt$out" ] || continue
		# Not fatal: the installer's initramfs stays if this one cannot be made.
		if chroot "$mnt" mkinitfs -o "$out.aq" "$kver" > /dev/null; then
			mv "$mnt$out.aq" "$mnt$out"
		else
			rm -f "$mnt$out.aq"
			say "warning: could not rebuild the initramfs for $kver"
		fi
	done
	umount "$mnt/dev"
	umount "$mnt/proc"
fi

# 9. OpenRC's dependency cache, made once here rather than at every new VM's first
# boot: OpenRC copies /var/cache/rc into /run/openrc at boot (what its savecache
# service saves at shutdown) and rebuilds the tree only when it is stale.
mkdir -p "$mnt/run/openrc"
if chroot "$mnt" rc-update -u > /dev/null 2>&1 && [ -f "$mnt/run/openrc/deptree" ]; then
	mkdir -p "$mnt/var/cache/rc"
	for f in deptree depconfig; do
		[ -f "$mnt/run/openrc/$f" ] && cp -p "$mnt/run/openrc/$f" "$mnt/var/cache/rc/"
	done
fi
rm -rf "$mnt/run/openrc"

# 10. What the bootloader boots, for the host (aq.images.basekernel): every regular
# file directly under /boot and GRUB's configuration, as a tar on the scratch disk $2,
# with the sysinit runlevel's entries (whether the guest redoes /dev: aq.coldplug).
# New VMs then boot this kernel directly from their first start.
if [ -n "${2:-}" ] && [ -b "$2" ]; then
	# Not fatal: without the copy, new VMs boot through the firmware the first time.
	if ! (cd "$mnt" && tar -cf "$2" $(find boot -maxdepth 1 -type f) \
		$(if [ -f boot/grub/grub.cfg ]; then echo boot/grub/grub.cfg; fi) \
		$(if [ -d etc/runlevels/sysinit ]; then echo etc/runlevels/sysinit; fi)); then
		say "warning: could not write /boot to $2"
	fi
fi

sync
for m in $(awk -v m="$mnt" '$2 == m || index($2, m "/") == 1 { print $2 }' /proc/mounts | sort -r); do
	umount "$m"
done
say "done"

# aq command-channel agent. Runs in the guest as root, started by
# /usr/libexec/aq/agent-bootstrap, which receives this file from the host through
# QEMU's fw_cfg at every boot. Busybox ash only: Alpine's base has nothing more.
#
# Each slot is three virtio-serial ports: aq.exec.N.ctl (control, both ways),
# aq.exec.N.out and aq.exec.N.err (the command's raw stdout and stderr). The protocol
# is described in aq/guest/channel.py, which is the host side.
SLOTS=@SLOTS@
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HOME=/root
USER=root
LOGNAME=root
SHELL=/bin/sh
export PATH HOME USER LOGNAME SHELL

port() {
	for dir in /sys/class/virtio-ports/*; do
		if [ "$(cat "$dir/name" 2>/dev/null)" = "$1" ]; then
			echo "/dev/${dir##*/}"
			return 0
		fi
	done
	return 1
}

bytes() {
	n=$(sed -n 's/^\([0-9][0-9]*\) bytes.*/\1/p' "$1" 2>/dev/null)
	echo "${n:-0}"
}

run() {
	# $1 is the shell command line to run; stdin frames and signals keep arriving on fd 3.
	dir=$(mktemp -d /tmp/aq-exec.XXXXXX) || return 1
	mkfifo "$dir/in" "$dir/out" "$dir/err"
	(cd /root && exec setsid sh -c "$1") <"$dir/in" >"$dir/out" 2>"$dir/err" &
	cmd=$!
	dd if="$dir/out" bs=65536 2>"$dir/out.stat" >&5 &
	opump=$!
	dd if="$dir/err" bs=65536 2>"$dir/err.stat" >&6 &
	epump=$!
	(
		# fd 7 keeps a reader on the stdin pipe, so stdin frames sent after the command
		# stopped reading never kill this reader; closing fd 4 is the command's EOF.
		exec 4>"$dir/in" 7<"$dir/in"
		while read -r kind arg <&3; do
			case $kind in
			D) head -c "$arg" <&3 >&4 ;;
			E) exec 4>&- ;;
			K) kill -s "$arg" -- "-$cmd" 2>/dev/null || kill -s "$arg" "$cmd" 2>/dev/null ;;
			esac
		done
		# The host went away: stop the command and the pumps (their writes would block
		# until the next host connects), and say nothing more on this slot.
		: >"$dir/gone"
		kill -s KILL -- "-$cmd" 2>/dev/null
		kill -s KILL "$opump" "$epump" 2>/dev/null
	) &
	reader=$!
	wait "$cmd"
	status=$?
	wait "$opump" "$epump"
	kill "$reader" 2>/dev/null
	if [ ! -e "$dir/gone" ]; then
		printf 'R %s %s %s\n' "$status" "$(bytes "$dir/out.stat")" "$(bytes "$dir/err.stat")" >&3
	fi
	rm -rf "$dir"
}

session() {
	ctl=$(port "aq.exec.$1.ctl") && out=$(port "aq.exec.$1.out") &&
		err=$(port "aq.exec.$1.err") || return 1
	exec 3<>"$ctl"
	# Writing blocks until a host connects, so an idle slot costs nothing.
	echo "ready" >&3
	while read -r kind arg <&3; do
		case $kind in
		P) echo "P $arg" >&3 ;;
		S)
			exec 5>"$out" 6>"$err"
			printf 'AQ%s\n' "$arg" >&5
			printf 'AQ%s\n' "$arg" >&6
			echo "S $arg" >&3
			if read -r kind len <&3 && [ "$kind" = X ]; then
				run "$(head -c "$len" <&3)"
			fi
			exec 5>&- 6>&-
			break
			;;
		esac
	done
	exec 3>&-
	return 0
}

for slot in $(seq 0 $((SLOTS - 1))); do
	(while :; do session "$slot" || sleep 5; done) &
done
wait

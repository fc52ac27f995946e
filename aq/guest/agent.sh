# aq command-channel agent. Runs in the guest as root, started by
# /usr/libexec/aq/agent-bootstrap, which receives this file from the host through
# QEMU's fw_cfg at every boot. Busybox ash only: Alpine's base has nothing more.
#
# Each slot is three virtio-serial ports: aq.exec.N.ctl (control, both ways),
# aq.exec.N.out and aq.exec.N.err (the command's raw stdout and stderr). The protocol
# is described in aq/guest/channel.py, which is the host side.
#
# Concurrency uses pipelines rather than `&` wherever a command will run: a shell
# without job control makes `&` jobs ignore SIGINT for good, and Ctrl-C on the host
# must reach the guest command.
SLOTS=@SLOTS@
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HOME=/root
USER=root
LOGNAME=root
SHELL=/bin/sh
export PATH HOME USER LOGNAME SHELL

port() {
	# The device of port $1, in $found. Builtins only, and no $(...) subshell: under
	# TCG every fork and exec costs tens of milliseconds, and an exec pays for each.
	for dir in /sys/class/virtio-ports/*; do
		name=
		read -r name 2>/dev/null <"$dir/name"
		if [ "$name" = "$1" ]; then
			found="/dev/${dir##*/}"
			return 0
		fi
	done
	return 1
}

take() {
	# Exactly $1 bytes from stdin to stdout. dd reads the whole block before writing
	# and has no buffer of its own, so a frame is consumed whole even when the writing
	# fails, and the next frame is never swallowed (head -c may).
	[ "$1" -gt 0 ] && dd bs="$1" count=1 iflag=fullblock 2>/dev/null
}

bytes() {
	# The byte count in dd's report ("N bytes (...) copied"), in $n; builtins only.
	n=0
	while read -r count word _; do
		case $word in bytes) case $count in *[!0-9]* | '') ;; *) n=$count ;; esac ;; esac
	done 2>/dev/null <"$1"
}

group() {
	cat "$dir/pid" 2>/dev/null
}

feed() {
	# stdin is the control port: stdin frames go to stdout (the command's stdin),
	# signals to the command's process group.
	read -r me _ </proc/self/stat
	echo "$me" >"$dir/feeder"
	while read -r kind arg; do
		case $kind in
		D) take "$arg" ;;
		E) exec >&- ;;
		K) pgid=$(group) && kill -s "$arg" "-$pgid" 2>/dev/null ;;
		esac
	done
	# The host went away: stop the command and the pumps (their writes would block
	# until the next host connects), and say nothing more on this slot.
	: >"$dir/gone"
	pgid=$(group) && kill -s KILL "-$pgid" 2>/dev/null
	kill -s KILL "$opump" "$epump" 2>/dev/null
}

launch() {
	# The feeder writes its pid as it starts: read it before the command runs, so it
	# can be stopped afterwards even if the work folder is gone by then (say, the
	# command mounted over /tmp). Wait as long as it takes: the feeder is the other
	# half of this pipeline and always writes it, and a feeder left running would
	# read the next session's control lines (under TCG a busy guest can take longer
	# than any fixed cap to schedule it).
	until [ -s "$dir/feeder" ]; do sleep 0.05; done
	feeder=
	read -r feeder <"$dir/feeder" 2>/dev/null
	# The command, in a session and process group of its own, from /root.
	# The command gets none of the channel's ports (fds 3, 5, 6): a daemon it leaves
	# behind would hold them open, and the slot's next session could not open them.
	sh -c 'echo $$ >"$2/pid"; cd /root && exec setsid sh -c "$1"' sh "$1" "$dir" \
		>"$dir/out" 2>"$dir/err" 3>&- 5>&- 6>&-
	status=$?
	[ -n "$feeder" ] && kill "$feeder" 2>/dev/null
	return $status
}

workdir() {
	# A private folder with the two FIFOs, in the first of /tmp, /run and /dev/shm that
	# works (the root may be read-only, /tmp gone or full); else the last reason, and 1.
	for base in /tmp /run /dev/shm; do
		made=$(mktemp -d "$base/aq-exec.XXXXXX" 2>&1) || {
			why=$made
			continue
		}
		why=$(mkfifo "$made/out" "$made/err" 2>&1) && : >"$made/feeder.new" 2>/dev/null &&
			rm -f "$made/feeder.new" && echo "$made" && return 0
		why=${why:-cannot write in $base}
		rm -rf "$made"
	done
	echo "$why"
	return 1
}

run() {
	# "F <reason>" tells the host the command could not be started, so it never waits.
	dir=$(workdir) || {
		why=$(echo "$dir" | head -c 200 | tr -d '\n')
		printf 'F no work folder in /tmp, /run or /dev/shm: %s\n' "$why" >&3
		return 1
	}
	command -v sh >/dev/null 2>&1 || {
		printf 'F the guest has no sh to run the command\n' >&3
		rm -rf "$dir"
		return 1
	}
	dd if="$dir/out" bs=65536 2>"$dir/out.stat" >&5 &
	opump=$!
	dd if="$dir/err" bs=65536 2>"$dir/err.stat" >&6 &
	epump=$!
	feed <&3 | launch "$1"
	status=$?
	wait "$opump" "$epump"
	if [ ! -e "$dir/gone" ]; then
		bytes "$dir/out.stat"
		sent=$n
		bytes "$dir/err.stat"
		printf 'R %s %s %s\n' "$status" "$sent" "$n" >&3
	fi
	rm -rf "$dir"
}

session() {
	port "aq.exec.$1.ctl" && ctl=$found && port "aq.exec.$1.out" && out=$found &&
		port "aq.exec.$1.err" && err=$found || return 1
	exec 3<>"$ctl"
	# Writing blocks until a host connects, so an idle slot costs nothing.
	echo "ready" >&3
	while read -r kind arg <&3; do
		case $kind in
		P) echo "P $arg" >&3 ;;
		T)
			# The clock to the host's (a resumed guest's stood still while it was
			# saved): one fork, where an exec session costs a dozen (seconds under TCG).
			case $arg in *[!0-9]* | '') ;; *) date -u -s "@$arg" >/dev/null 2>&1 ;; esac
			echo "T $arg" >&3
			;;
		S)
			# A port another process holds open cannot be opened again (EBUSY): say
			# so rather than let the failed exec end this slot's loop for good.
			if ! { command exec 5>"$out" 6>"$err"; } 2>/dev/null; then
				exec 5>&- 6>&-
				echo "S $arg" >&3
				echo "F this slot's output port is held open by a process in the guest" >&3
				break
			fi
			printf 'AQ%s\n' "$arg" >&5
			printf 'AQ%s\n' "$arg" >&6
			echo "S $arg" >&3
			# The host repeats its S until it hears back (an S that arrives while
			# the previous session closes the port is discarded); skip the repeats.
			kind=
			while read -r kind len <&3 && [ "$kind" = S ]; do kind=; done
			[ "$kind" = X ] && run "$(take "$len" <&3)"
			exec 5>&- 6>&-
			break
			;;
		esac
	done
	exec 3>&-
	return 0
}

serve() {
	# Slots past the first are plugged in once the VM is ready (aq/qemu/hotplug.py):
	# until its ports appear, a slot looks again every 2 s.
	# Nothing on the serial console: it is the user's terminal (the shell reports
	# every feeder it kills as "Terminated" on stderr).
	exec </dev/null >/dev/null 2>/dev/null
	while :; do
		session "$1" || sleep 2
	done
}

# One pipeline member per slot: all run at once, none with SIGINT ignored.
eval "$(seq 0 $((SLOTS - 1)) | sed 's/.*/serve &/' | tr '\n' '|' | sed 's/|$//')"

# aq command-channel agent. Runs in the guest as root, started by
# /usr/libexec/aq/agent-bootstrap, which receives this file from the host through
# QEMU's fw_cfg at every boot. Busybox ash only: Alpine's base has nothing more.
#
# Each slot is three virtio-serial ports: aq.exec.N.ctl (control, both ways),
# aq.exec.N.out and aq.exec.N.err (the command's raw stdout and stderr). The protocol
# is described in aq/guest/channel.py, which is the host side.
#
# Under TCG a fork costs about 2 ms, a program started about 11 ms and `sh -c true`
# about 22 ms (measured in the guest, 100 of each), so a slot is armed before
# its session comes: the work folder (kept from one session to the next), the output
# pumps and the shell that will run the command all exist while the slot is idle, and
# a session itself costs builtins and what the command runs. Concurrency uses
# pipelines rather than `&` wherever a command will run: a shell without job control
# makes `&` jobs ignore SIGINT for good, and Ctrl-C on the host must reach the guest
# command.
SLOTS=@SLOTS@
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
HOME=/root
USER=root
LOGNAME=root
SHELL=/bin/sh
export PATH HOME USER LOGNAME SHELL
LONG_LINE=16384 # a longer command line is read by dd, not byte by byte by `read`
TICK=/run/aq-agent.tick # a FIFO nobody writes to: see tick()

port() {
	# The device of port $1, in $found. Builtins only.
	for vport in /sys/class/virtio-ports/*; do
		name=
		read -r name 2>/dev/null <"$vport/name"
		if [ "$name" = "$1" ]; then
			found="/dev/${vport##*/}"
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

tick() {
	# Wait about $1 seconds without starting a process (sleep costs a fork and an
	# exec): a read that times out on a FIFO nobody writes to.
	read -t "$1" _ <>"$TICK" 2>/dev/null || [ -p "$TICK" ] || sleep "$1"
}

mypid() {
	# This process's pid, in $me ($$ is the agent's own in a subshell).
	read -r me _ </proc/self/stat
}

clock() {
	# The clock to the host's (a resumed guest's stood still while it was saved):
	# one fork, where an exec session costs several.
	case $1 in *[!0-9]* | '') ;; *) date -u -s "@$1" >/dev/null 2>&1 ;; esac
	echo "T $1" >&3
}

workdir() {
	# The slot's private work folder with the two FIFOs, made the current directory
	# (its files are then found even if something is mounted over its path later):
	# the last session's if it is still there (nothing holds its FIFOs once a session
	# has ended), else a new one in the first of /tmp, /run and /dev/shm that works;
	# else the last reason in $why.
	if [ -n "$dir" ] && [ -p "$dir/out" ] && [ -p "$dir/err" ] && cd "$dir"; then
		return 0
	fi
	dir=
	for base in /tmp /run /dev/shm; do
		made=$(mktemp -d "$base/aq-exec.XXXXXX" 2>&1) || {
			why=$made
			continue
		}
		if mkfifo "$made/out" "$made/err" 2>"$made/why" && cd "$made" && true >gone 2>/dev/null; then
			dir=$made
			return 0
		fi
		why=
		read -r why <"$made/why" 2>/dev/null
		why=${why:-cannot write in $base}
		rm -rf "$made"
	done
	return 1
}

pumps() {
	# The command's stdout and stderr from the FIFOs to the ports, counted by dd. When
	# both have ended (the command and anything it left holding them is gone), stop
	# the feeder, which ends the session's pipeline.
	dd if=out bs=65536 2>out.stat >&5 3>&- &
	o=$!
	dd if=err bs=65536 2>err.stat >&6 3>&- &
	echo "$o $!" >pumps
	# The feeder's pid now, not when it is needed: the command may delete this folder.
	wanted feeder
	f=$got
	wait
	[ -n "$f" ] && kill "$f" 2>/dev/null
}

wanted() {
	# The first two words of file $1 in $got and $got2, waiting up to 2 s for another
	# process of this slot to write it (they all start at once when the slot is armed).
	tries=0
	got=
	until read -r got got2 _ <"$1" 2>/dev/null && [ -n "$got" ] || [ $tries -gt 40 ]; do
		tick 0.05
		tries=$((tries + 1))
	done
}

launch() {
	# Becomes the command's shell: in a session and process group of its own,
	# from /root, with none of the channel's ports (a daemon it leaves behind would
	# hold them), its stdin the rest of this pipeline's pipe after the command line.
	# It writes its pid once it leads its group, so a signal sent to the group never
	# misses it. The line is shell-quoted words (aq.guest.wire.command_line), so this
	# armed shell runs them itself, as `sh -c LINE` would: a builtin in this shell,
	# anything else exec'd in its place, and the same error texts ("sh: NAME: not
	# found", "sh: cd: line 0: ...": hence one line and no $0), without starting a
	# second shell (an exec, about 20 ms under TCG).
	exec setsid sh -c 'echo $$ >pid; IFS= read -r cmd || exit 0; cd /root 2>/dev/null || cd /; eval "set -- $cmd" && unset cmd && "$@"' >out 2>err 3>&- 5>&- 6>&- 7>&- 8>&- 9>&-
}

control() {
	# The slot's control port until a command starts, then its feeder: stdin frames
	# to the command's stdin (this process's stdout), signals to its process group.
	mypid
	echo "$me" >feeder
	# Every pid a session may need, now, while the slot is idle: the launcher writes
	# its pid and the pumps theirs as they start, and the command may delete this
	# folder later.
	wanted pid
	pgid=$got
	wanted pumps
	o=$got
	e=$got2
	while :; do
		echo ready >&3 # blocks until a host connects
		while read -r kind arg <&3; do
			case $kind in
			P) echo "P $arg" >&3 ;;
			T) clock "$arg" ;;
			S)
				if [ ! -p "$dir/out" ]; then
					# The work folder was deleted or hidden by a mount while the slot
					# was idle: unanswered, the host repeats its S to a slot armed anew.
					echo 1 >&9
					exit 1
				fi
				nonce=$arg
				while :; do
					printf 'AQ%s\n' "$nonce" >&5
					printf 'AQ%s\n' "$nonce" >&6
					echo "S $nonce" >&3
					# The host repeats its S until it hears back: skip the repeats. A
					# different nonce is a newer host (an earlier one gave up).
					kind=
					while read -r kind len <&3 && [ "$kind" = S ] && [ "$len" = "$nonce" ]; do
						kind=
					done
					[ "$kind" = S ] || break
					nonce=$len
				done
				[ "$kind" = X ] || continue
				case $len in *[!0-9]* | '') continue ;; esac
				if [ "$len" -gt "$LONG_LINE" ]; then
					cmd=$(take "$len" <&3)
					read -r _ <&3
				else
					IFS= read -r cmd <&3
				fi
				if ! command -v sh >/dev/null 2>&1; then
					printf 'F %s\n' "the guest has no sh to run the command" >&3
					echo 1 >&9
					exit 1
				fi
				printf '%s\n' "$cmd"
				feed
				exit 0
				;;
			esac
		done
	done
}

feed() {
	while read -r kind arg <&3; do
		case $kind in
		D) take "$arg" <&3 ;;
		E) exec >&- ;;
		K) [ -n "$pgid" ] && kill -s "$arg" "-$pgid" 2>/dev/null ;;
		esac
	done
	# The host went away: stop the command and the pumps (their writes would block
	# until the next host connects), and say nothing more on this slot.
	echo 1 >&9
	[ -n "$pgid" ] && kill -s KILL "-$pgid" 2>/dev/null
	[ -n "$o" ] && kill -s KILL "$o" "$e" 2>/dev/null
}

refuse() {
	# Serve the control port with every command refused for reason $1, until one has
	# been; the caller then tries again to arm the slot.
	while :; do
		echo ready >&3
		while read -r kind arg <&3; do
			case $kind in
			P) echo "P $arg" >&3 ;;
			T) clock "$arg" ;;
			S)
				echo "S $arg" >&3
				printf 'F %s\n' "$1" >&3
				return 0
				;;
			esac
		done
	done
}

session() {
	# One armed session: returns once the command ended and its result was sent.
	cd /
	if ! workdir; then
		why=$(echo "$why" | head -c 200 | tr -d '\n')
		refuse "no work folder in /tmp, /run or /dev/shm: $why"
		fresh
		return
	fi
	# `true`, not `:`, wherever a redirection may fail (this folder may be gone): a
	# special builtin's failed redirection ends a non-interactive shell, and with it
	# this slot.
	true >gone 2>/dev/null
	true >pid 2>/dev/null
	true >feeder 2>/dev/null
	true >pumps 2>/dev/null
	# The result's files held open (dd writes its counts to the same files), and read
	# through /proc/self/fd: a command that deletes this folder still gets its result.
	command exec 7<>out.stat 8<>err.stat 9<>gone 2>/dev/null
	pumps &
	pumping=$!
	control | launch
	status=$?
	# A pump still waiting for its FIFO's writer (the command was never started) gets
	# one that leaves at once: opening a FIFO read-write never blocks.
	true <>out 2>/dev/null
	true <>err 2>/dev/null
	wait "$pumping"
	if [ ! -s /proc/self/fd/9 ]; then
		bytes /proc/self/fd/7
		sent=$n
		bytes /proc/self/fd/8
		printf 'R %s %s %s\n' "$status" "$sent" "$n" >&3
	else
		# The pumps may have been killed while something still held the FIFOs (a
		# process that left the command's group): the next session gets new ones.
		cd /
		rm -rf "$dir"
		dir=
	fi
	exec 7>&- 8>&- 9>&-
	fresh
}

fresh() {
	# Close and reopen the control port: the kernel then drops what the last host left
	# unread (stdin frames a command did not take, a start it gave up on), which the
	# next session would otherwise read as control lines. 1 if the port is gone.
	exec 3>&-
	command exec 3<>"$ctl" 2>/dev/null
}

slot() {
	# Serve slot $1 for as long as its ports exist; 1 if they are not there (yet).
	port "aq.exec.$1.ctl" && ctl=$found && port "aq.exec.$1.out" && out=$found &&
		port "aq.exec.$1.err" && err=$found || return 1
	command exec 3<>"$ctl" 2>/dev/null || return 1
	if ! { command exec 5>"$out" 6>"$err"; } 2>/dev/null; then
		# A port another process holds open cannot be opened again (EBUSY).
		exec 5>&- 6>&-
		refuse "this slot's output port is held open by a process in the guest"
		exec 3>&-
		return 0
	fi
	while [ -e "$ctl" ] && session; do :; done
	exec 3>&- 5>&- 6>&-
	return 0
}

serve() {
	# Slots past the first are plugged in once the VM is ready (aq/qemu/hotplug.py):
	# until its ports appear, a slot looks again every half second (the first exec
	# after `aq start` may well land on one of them).
	# Nothing on the serial console: it is the user's terminal (the shell reports
	# every feeder it kills as "Terminated" on stderr).
	exec </dev/null >/dev/null 2>/dev/null
	while :; do
		slot "$1" || tick 0.5
	done
}

# Work folders of an earlier agent (one that was stopped with the guest, say): this
# one has none yet, and a command still running from those sessions keeps its FIFOs.
# Looked for with builtins first: at boot there are none, and rm is a program.
for old in /tmp/aq-exec.* /run/aq-exec.* /dev/shm/aq-exec.* "$TICK"; do
	if [ -e "$old" ] || [ -L "$old" ]; then
		rm -rf /tmp/aq-exec.* /run/aq-exec.* /dev/shm/aq-exec.* "$TICK" 2>/dev/null
		break
	fi
done
mkfifo -m 600 "$TICK" 2>/dev/null
# One pipeline member per slot: all run at once, none with SIGINT ignored. Built
# with builtins: the agent starts as the boot ends, when every program counts.
members=
slot_no=0
while [ "$slot_no" -lt "$SLOTS" ]; do
	members="$members${members:+ | }serve $slot_no"
	slot_no=$((slot_no + 1))
done
eval "$members"

"""VM commands that work on the store: new, ls, status, rm, history."""

from __future__ import annotations

import click

from aq import defaults
from aq.cli import complete
from aq.cli.output import echo, iso, json_option, note, print_json, print_table
from aq.cli.render import VM_HEADERS, forward_text, vm_dict, vm_row
from aq.units import format_size


def _memory(_ctx, _param, value: str) -> int:
    from aq.units import parse_size

    return parse_size(value, default_unit="m") >> 20


def _size(_ctx, _param, value: str | None) -> int | None:
    from aq.units import parse_size

    return None if value is None else parse_size(value, default_unit="g")


@click.command("new")
@click.argument("name", required=False)
@click.option("--cpus", type=click.IntRange(1, 64), default=defaults.CPUS, show_default=True)
@click.option(
    "--memory",
    default=format_size(defaults.MEMORY_MIB << 20),
    show_default=True,
    callback=_memory,
    help="RAM, e.g. 512M.",
)
@click.option(
    "--disk-size", callback=_size, help="Virtual disk size, e.g. 8G (default: the base's)."
)
@click.option(
    "-p",
    "--publish",
    "ports",
    multiple=True,
    metavar="[ADDR:]HOST:GUEST[/udp]",
    help="Forward a host port to the guest; GUEST alone lets aq pick the host port. "
    "ADDR is IPv4 (QEMU's user network forwards no IPv6 host address).",
)
@click.option(
    "--arch",
    type=click.Choice(["aarch64", "x86_64"]),
    help="The guest's CPU architecture (default: the host's). Another arch than the "
    "host's runs emulated (TCG): slow, but it works on any host.",
)
@click.option(
    "--from",
    "tag",
    metavar="TAG",
    shell_complete=complete.snapshot_tag,
    help="Spawn on a snapshot (`aq snapshot ls`).",
)
@click.option("--count", type=click.IntRange(1, 256), help="With --from: make NAME-1 ... NAME-N.")
@json_option
def new(name, cpus, memory, disk_size, ports, arch, tag, count, as_json) -> None:
    """Create a VM (a copy-on-write overlay on the Alpine base) without starting it.

    With no NAME, aq picks a readable random one. Each VM gets its own MAC address
    and an SSH port on 127.0.0.1. With --from TAG the VM stands on a snapshot; a
    live snapshot's clones resume already booted, each with its own identity.

    \b
    aq new guest-1 -p 8080:80 --disk-size 8G
    aq new web --from ready --count 3
    aq new arm-1 --arch aarch64
    """
    from aq import vm
    from aq.images.base import ensure_base
    from aq.netspec import parse_forward
    from aq.progress import Progress

    if tag is not None or count is not None:
        if arch is not None:
            from aq.errors import InvalidInput

            raise InvalidInput("--arch cannot go with --from", hint="a snapshot keeps its arch")
        _new_from(name, tag, count, cpus, memory, disk_size, ports, as_json)
        return

    spec = vm.NewVm(
        name=name,
        cpus=cpus,
        memory_mib=memory,
        disk_size=disk_size,
        forwards=[parse_forward(p) for p in ports],
    )
    vm.check_spec(spec)
    created = vm.create(spec, ensure_base(Progress(), arch))
    if as_json:
        print_json(vm_dict(created))
    else:
        echo(created.name)


def _new_from(name, tag, count, cpus, memory, disk_size, ports, as_json) -> None:
    from aq import clones
    from aq.errors import InvalidInput
    from aq.netspec import parse_forward

    if tag is None:
        raise InvalidInput("--count needs --from TAG", hint="aq new NAME --from TAG --count N")
    if name is None:
        raise InvalidInput("--from needs a NAME", hint=f"aq new NAME --from {tag}")
    if disk_size is not None:
        raise InvalidInput("--disk-size cannot change a snapshot's disk", hint="leave it out")
    made = clones.spawn(
        clones.clone_names(name, count), tag, cpus, memory, [parse_forward(p) for p in ports]
    )
    if as_json:
        print_json([vm_dict(v) for v in made] if count is not None else vm_dict(made[0]))
    else:
        for created in made:
            echo(created.name)


@click.command("ls")
@json_option
def ls(as_json: bool) -> None:
    """List VMs (removed ones are in `aq history`).

    \b
    aq ls --json | jq -r '.[] | select(.state == "running") | .name'
    """
    from aq import vm

    vms = vm.list_vms()
    if as_json:
        print_json([vm_dict(v) for v in vms])
    else:
        print_table(VM_HEADERS, [vm_row(v) for v in vms])


@click.command("status")
@click.argument("name", shell_complete=complete.vm_name)
@json_option
def status(name: str, as_json: bool) -> None:
    """Show one VM: state, last boot, ports, MAC, disk use and backing chain.

    \b
    aq status guest-1 --json
    """
    from aq import boottime, vm
    from aq.units import format_size

    found = vm.get(name)
    data = vm_dict(found)
    data["disk_used"] = vm.disk_usage(found)
    data["backing_chain"] = vm.backing_chain(found)
    data["uptime_s"] = vm.uptime(found)
    data["accel"] = found.accel
    data["last_boot_s"] = boottime.last_boot(found.id)  # boot-time hook (aq.boottime)
    data["guest"] = vm.guest_status(found)
    data["ssh_host_key"] = found.ssh_host_key
    if as_json:
        print_json(data)
        return
    state = found.state
    if data["guest"] == "guest-panicked":
        state += " (guest kernel panicked; see `aq console` or the serial log)"
    elif data["guest"] not in (None, "running"):
        state += f" (QEMU: {data['guest']})"
    uptime = data["uptime_s"]
    rows = [
        ("name", found.name),
        ("state", state),
        ("arch", found.arch),
        ("pid", found.pid or "-"),
        ("uptime", "-" if uptime is None else _duration(uptime)),
        ("accel", found.accel or "-"),
        ("last boot", "-" if data["last_boot_s"] is None else f"{data['last_boot_s']:.1f} s"),
        ("cpus", found.cpus),
        ("memory", format_size(found.memory_mib << 20)),
        ("mac", found.mac),
        ("ports", ", ".join(forward_text(f) for f in found.forwards)),
        ("disk", f"{format_size(data['disk_used'])} used of {format_size(found.disk_size)}"),
        ("backing", " <- ".join(data["backing_chain"])),
        ("created", data["created_at"]),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        echo(f"{key.ljust(width)}  {value}")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


@click.command("rm")
@click.argument("name", shell_complete=complete.vm_name)
@click.option("--force", is_flag=True, help="Remove even if it is running (it is stopped first).")
def rm(name: str, force: bool) -> None:
    """Remove a VM and its disk. Its history stays in `aq history`.

    \b
    aq rm guest-1
    """
    from aq import power

    power.remove(name, force=force)
    note(f"removed {name}")


@click.command("history")
@click.argument("name", required=False, shell_complete=complete.vm_name)
@json_option
def history(name: str | None, as_json: bool) -> None:
    """Show VM state transitions, oldest first (all VMs, removed ones included).

    \b
    aq history guest-1
    """
    from aq import vm

    rows = vm.history(name)
    if as_json:
        print_json(
            [
                {
                    "vm": row.name,
                    "vm_id": row.vm_id,
                    "event": row.event.event,
                    "from_state": row.event.from_state,
                    "to_state": row.event.to_state,
                    "at": iso(row.event.at),
                    "pid": row.event.pid,
                    "detail": row.event.detail,
                }
                for row in rows
            ]
        )
        return
    print_table(
        ["TIME (UTC)", "VM", "EVENT", "FROM", "TO", "PID", "DETAIL"],
        [
            [
                row.event.at.isoformat(sep=" ", timespec="milliseconds"),
                row.name,
                row.event.event,
                row.event.from_state or "-",
                row.event.to_state,
                row.event.pid,
                row.event.detail or "",
            ]
            for row in rows
        ],
    )


COMMANDS = [new, ls, status, rm, history]

#!/bin/busybox sh
# Mariposa's /init for virtual machines (mariposa/vm/initramfs.py packs it with the host's static
# busybox and the kernel's virtio modules). It stays PID 1 for the VM's whole life: it brings the
# devices up, mounts the instance's disks, runs the service's command chrooted in the root disk,
# answers the host on the control channel, and powers the VM off when the command exits, so that
# QEMU (run with -no-reboot) exits and the driver sees the command's exit like a container's.
#
#   console (ttyS0): the kernel's and the command's output, and the lines
#                    "MARIPOSA START" (the command's output follows), "MARIPOSA READY" (it runs),
#                    "MARIPOSA EXIT CODE", "MARIPOSA ERROR WHAT"
#   control (ttyS1): host -> guest "SIGNAL NAME", "EXEC ID B64ARGV [UID:GID]", "PING ID",
#                    "MDATA B64TAR" (the mdata files now: swapped in whole at /run/mariposa/mdata);
#                    guest -> host "MARIPOSA READY", "EXITED ID CODE B64OUTPUT", "PONG ID",
#                    "MARIPOSA EXIT CODE"
#   kernel cmdline:  mariposa.ip=ADDR/PREFIX mariposa.gw=GW mariposa.dns=IP[,IP] mariposa.hostname=NAME
#                    mariposa.mdata=/dev/vdX (the mdata disk, made at each boot: the values of now)
#                    mariposa.ipN=ADDR/PREFIX (ethN, N from 1: the other networks; empty: no address)
#   /dev/vda         the root disk (ext4), /dev/vdb the config disk (ext4, read-only), then volumes,
#                    then the mdata disk
#   config disk:     command (one base64 arg a line), env (KEY=base64 lines), workdir, user
#                    (UID:GID), mounts ("DEVICE TARGET ro|rw" lines), secrets/...
#
# Why the command runs chrooted and this script stays PID 1 (not switch_root): the init must
# outlive the command to report its exit code and to answer EXEC and SIGNAL; and the command gets
# ordinary signal handling (it is not PID 1), as under Docker's tini. Without a command file the
# image's own /sbin/init takes over as PID 1 (switch_root): then there is no control channel.
#
# Everything written into the image's root goes through busybox chrooted there
# (/.mariposa/bin, a bind mount of this initramfs's /bin), so an absolute symlink in the image
# resolves inside the image, never onto the initramfs.

export PATH=/sbin:/usr/sbin:/bin:/usr/bin
CONSOLE=/dev/console
CTL=/dev/ttyS1
ROOT=/newroot
CFG=$ROOT/.mariposa/config
set -f  # no globbing: the command line and the config's lines are data

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run /tmp /dev/pts /dev/shm

console() { echo "$*" > $CONSOLE; }

# A line on the control channel. The lock (mkdir is atomic) keeps the lines of concurrent EXECs
# whole, and is taken over after 2 s (a writer killed holding it must not silence the rest); the
# subshell keeps PID 1 from ever opening the port (a session leader opening a tty would make it
# its controlling terminal).
say() (
    i=0
    while ! mkdir /run/ctl.lock 2>/dev/null && [ $i -lt 200 ]; do usleep 10000; i=$((i + 1)); done
    [ -c $CTL ] && printf '%s\n' "$*" > $CTL
    rmdir /run/ctl.lock
)

die() {
    console "MARIPOSA ERROR $*"
    sync
    reboot -f
    sleep 60
}

inroot() { chroot $ROOT /.mariposa/bin/busybox "$@"; }

# base64 to $_v, exactly (a command substitution would drop trailing newlines)
b64d() { _v=$(printf '%s' "$1" | base64 -d; echo x); _v=${_v%x}; }

# The files of directory $1 become the mdata, swapped in whole as mdata/files.py does on the host:
# a new ..DIR, the ..data link renamed over (one atomic rename), KEY -> ..data/KEY links, the old
# directory and the links of keys gone removed. A reader never sees half a change.
mdata_apply() {
    set +f
    mount -o remount,rw $MD  # read-only between changes, as a container's bind mount is
    new="..$(date +%s)_$$_$RANDOM"
    mkdir "$MD/$new" && cp "$1"/* "$MD/$new"/ 2>/dev/null
    chmod 0755 "$MD/$new"; chmod 0444 "$MD/$new"/* 2>/dev/null
    ln -s "$new" "$MD/..data_tmp" && mv -fT "$MD/..data_tmp" "$MD/..data"
    for f in "$MD/$new"/*; do
        [ -e "$f" ] || continue
        k=${f##*/}
        [ -L "$MD/$k" ] || ln -s "..data/$k" "$MD/$k"
    done
    for l in "$MD"/*; do [ -e "$l" ] || rm -f "$l"; done
    for d in "$MD"/..?*; do
        case "${d##*/}" in ..data|"$new") ;; *) [ -L "$d" ] || rm -rf "$d" ;; esac
    done
    mount -o remount,ro $MD
    set -f
}

for m in $(cat /modules/order); do
    insmod /modules/$m.ko || console "mariposa: insmod $m failed"
done

ip= gw= dns= hostname= more= mdata_dev=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        mariposa.ip[0-9]=*) more="$more ${arg#mariposa.ip}" ;;  # N=ADDR/PREFIX: ethN, another network
        mariposa.ip=*) ip=${arg#*=} ;;
        mariposa.gw=*) gw=${arg#*=} ;;
        mariposa.dns=*) dns=${arg#*=} ;;
        mariposa.hostname=*) hostname=${arg#*=} ;;
        mariposa.mdata=*) mdata_dev=${arg#*=} ;;
    esac
done

# virtio devices are probed as their modules load; their nodes appear a moment later
waitfor() {
    i=0
    while [ ! -e "$1" ] && [ $i -lt 200 ]; do usleep 25000; i=$((i + 1)); done
    [ -e "$1" ]
}

ip link set lo up
if [ -n "$ip" ]; then
    waitfor /sys/class/net/eth0 || die "no network device eth0"
    ip link set eth0 up || die "eth0 does not come up"
    ip addr add "$ip" dev eth0 || die "cannot set address $ip"
    [ -z "$gw" ] || ip route add default via "$gw" || die "cannot set the default route via $gw"
fi
for nic in $more; do
    n=${nic%%=*}
    waitfor /sys/class/net/eth$n || die "no network device eth$n"
    ip link set eth$n up || die "eth$n does not come up"
    [ -z "${nic#*=}" ] || ip addr add "${nic#*=}" dev eth$n || die "cannot set address ${nic#*=} on eth$n"
done
[ -z "$hostname" ] || hostname "$hostname"

waitfor /dev/vda || die "no root disk /dev/vda"
mkdir -p $ROOT
mount -t ext4 /dev/vda $ROOT || die "cannot mount the root disk /dev/vda"
mkdir -p $ROOT/.mariposa/bin $ROOT/.mariposa/config
mount --bind /bin $ROOT/.mariposa/bin || die "cannot bind busybox into the root disk"
if [ -e /dev/vdb ] || waitfor /dev/vdb; then
    mount -t ext4 -o ro /dev/vdb $CFG || die "cannot mount the config disk /dev/vdb"
fi

for d in dev proc sys; do
    [ -L $ROOT/$d ] || inroot mkdir -p /$d
done
mount -t devpts -o newinstance,ptmxmode=0666 devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mount --rbind /dev $ROOT/dev
mount -t proc proc $ROOT/proc
mount -t sysfs sysfs $ROOT/sys

# mdata and secrets where a container has them: the secrets (fixed for the instance's life) bound
# read-only at /run/secrets; the mdata on a tmpfs at /run/mariposa/mdata, since it is live (MDATA)
MD=$ROOT/run/mariposa/mdata
if [ -d $CFG/secrets ]; then
    inroot mkdir -p /run/secrets && mount --bind $CFG/secrets $ROOT/run/secrets  # read-only as its source
fi
if [ -n "$mdata_dev" ]; then
    waitfor "$mdata_dev" || die "no mdata disk $mdata_dev"
    mkdir -p /run/mdata-disk && mount -t ext4 -o ro "$mdata_dev" /run/mdata-disk || die "cannot mount $mdata_dev"
    inroot mkdir -p /run/mariposa/mdata && mount -t tmpfs -o mode=0755,size=4m mdata $MD \
        || die "cannot mount the mdata tmpfs"
    mdata_apply /run/mdata-disk
    umount /run/mdata-disk
fi

if [ -f $CFG/mounts ]; then
    while read -r dev target mode || [ -n "$dev" ]; do
        [ -n "$dev" ] || continue
        waitfor "$dev" || die "no volume disk $dev"
        inroot mkdir -p "$target" || die "cannot make the mount point $target"
        inroot mount -t ext4 -o "$mode" "$dev" "$target" || die "cannot mount $dev on $target ($mode)"
    done < $CFG/mounts
fi

# names: what Docker writes for a container (resolv.conf from the command line, the hostname)
if [ -n "$dns" ]; then
    inroot rm -f /etc/resolv.conf
    for ns in $(echo "$dns" | tr ',' ' '); do echo "nameserver $ns"; done | inroot sh -c 'cat > /etc/resolv.conf'
fi
if [ -n "$hostname" ]; then
    echo "$hostname" | inroot sh -c 'cat > /etc/hostname'
    { printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n'
      [ -z "$ip" ] || printf '%s\t%s\n' "${ip%/*}" "$hostname"
    } | inroot sh -c 'cat > /etc/hosts'
fi

if [ ! -f $CFG/command ]; then
    # the image's own init as PID 1: a system image that starts its services itself
    inroot test -x /sbin/init || die "no command and no /sbin/init in the image"
    umount $ROOT/.mariposa/bin
    console "MARIPOSA START"
    console "MARIPOSA READY"
    exec switch_root $ROOT /sbin/init
fi

workdir=/
[ ! -f $CFG/workdir ] || workdir=$(cat $CFG/workdir)
[ -z "$workdir" ] || inroot mkdir -p "$workdir"
uid= gid=
if [ -f $CFG/user ]; then
    IFS=: read -r uid gid < $CFG/user
fi

# Runs, in place of this (sub)shell, the arguments in $1 (one base64 arg a line, or with $2 =
# nul: NUL-terminated args) in the image: the command's environment alone (env -i, plus PATH,
# HOME and HOSTNAME where it sets none), its user and its working directory.
run_in_root() {
    set -- "$1" "$2"
    has_path= has_home= has_host=
    if [ -f $CFG/env ]; then
        while IFS= read -r line || [ -n "$line" ]; do
            [ -n "$line" ] || continue
            key=${line%%=*}
            b64d "${line#*=}"
            set -- "$@" "$key=$_v"
            case "$key" in PATH) has_path=1 ;; HOME) has_home=1 ;; HOSTNAME) has_host=1 ;; esac
        done < $CFG/env
    fi
    [ -n "$has_path" ] || set -- "$@" PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    [ -n "$has_home" ] || { [ "${uid:-0}" = 0 ] && set -- "$@" HOME=/root || set -- "$@" HOME=/; }
    [ -n "$has_host" ] || [ -z "$hostname" ] || set -- "$@" "HOSTNAME=$hostname"
    set -- "$@" /bin/busybox nsenter -r$ROOT "-w$ROOT$workdir" -F
    [ -z "$uid" ] || set -- "$@" -S "$uid" -G "$gid"
    set -- "$@" --
    if [ "$2" = nul ]; then
        while IFS= read -r -d '' arg; do set -- "$@" "$arg"; done < "$1"
    else
        while IFS= read -r line || [ -n "$line" ]; do b64d "$line"; set -- "$@" "$_v"; done < "$1"
    fi
    shift 2
    exec env -i "$@"
}

# EXEC ID B64ARGV: the output (stdout and stderr, at most 256 KiB) and exit code, on one line
exec_one() {
    id=$1
    printf '%s' "$2" | base64 -d > /run/exec/$id.argv 2>/dev/null || { say "EXITED $id 127 "; return; }
    printf '\0' >> /run/exec/$id.argv
    ( run_in_root /run/exec/$id.argv nul ) < /dev/null > /run/exec/$id.out 2>&1
    code=$?
    say "EXITED $id $code $(head -c 262144 /run/exec/$id.out | base64 -w 0)"
    rm -f /run/exec/$id.argv /run/exec/$id.out
}

control_loop() {
    mkdir -p /run/exec
    while IFS= read -r line; do
        set -- $line
        case "$1" in
            SIGNAL)
                case "$2" in *[!A-Z0-9]*|"") continue ;; esac
                pid=$(cat /run/command.pid 2>/dev/null) && kill -"$2" "$pid" ;;
            EXEC)
                case "$2" in *[!A-Za-z0-9_.-]*|"") continue ;; esac
                case "$4" in *[!0-9:]*) continue ;; esac
                # detached twice: the loop reads on, and no job lingers in this shell; a user
                # (UID:GID) given is this EXEC's alone
                ( [ -z "$4" ] || { uid=${4%%:*}; gid=${4#*:}; }; exec_one "$2" "$3" & ) ;;
            MDATA)
                case "$2" in *[!A-Za-z0-9+/=]*) continue ;; esac
                [ -d "$MD" ] || continue
                rm -rf /run/mdata-in && mkdir -p /run/mdata-in
                printf '%s' "$2" | base64 -d | tar -x -C /run/mdata-in && mdata_apply /run/mdata-in ;;
            PING)
                case "$2" in *[!A-Za-z0-9_.-]*|"") continue ;; esac
                say "PONG $2" ;;
        esac
    done < $CTL
}

ctl_pid=
if [ -c $CTL ]; then
    # raw before READY: the host writes only after READY, and no byte of it may be echoed back or
    # cooked (the port keeps its settings between opens; a subshell, for the reason of say)
    ( stty -F $CTL raw -echo clocal )
    control_loop &
    ctl_pid=$!
fi

# READY once the command is exec'd, as a container is running once its process is: a SIGNAL
# before would reach a shell that has not yet set the command's traps. Told by the process's name
# (not its binary: busybox runs the image's applets as itself), which is ours, then env's, then
# nsenter's on the way; by a watcher, detached twice so the command never has it as a child.
ready_when_started() {
    i=0
    while [ $i -lt 2000 ]; do
        case "$(cat /proc/$1/comm 2>/dev/null)" in init|env|nsenter|busybox) ;; *) break ;; esac
        usleep 2000; i=$((i + 1))
    done
    console "MARIPOSA READY"
    say "MARIPOSA READY"
}
exec 3>&2 2>/dev/null  # the shell's own "Terminated" when a signal ends the command: not its output
(
    read -r pid _ < /proc/self/stat
    echo "$pid" > /run/command.pid
    console "MARIPOSA START"  # what follows on the console is the command's output (its log)
    ( ready_when_started "$pid" & )
    run_in_root $CFG/command lines
) < /dev/null > $CONSOLE 2>&1
code=$?
exec 2>&3 3>&-
rm -f /run/command.pid

[ -z "$ctl_pid" ] || kill "$ctl_pid" 2>/dev/null
console "MARIPOSA EXIT $code"
say "MARIPOSA EXIT $code"

# what the command left behind goes the way a container's processes go when its PID 1 exits
kill -KILL -1 2>/dev/null
sync
for m in $(grep " $ROOT" /proc/mounts | cut -d' ' -f2 | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
done
sync
reboot -f

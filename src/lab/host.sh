#!/bin/sh
# Starts one lab host. Stage 1 runs on the machine: it joins the host's cgroups and
# enters its network namespace and new mount/uts/pid/ipc/cgroup namespaces.
# Stage 2 is PID 1 there: it builds the root filesystem and execs systemd.
set -eu
stage=$1 name=$2 image=$3 dir=$4 loopdev=${5:-} init=${6:-systemd}

if [ "$stage" = 1 ]; then
    for procs in $(cat "$dir/cgroups"); do echo $$ > "$procs"; done
    # A host that reboots itself boots again: reboot(2) in a pid namespace ends its init
    # with SIGHUP (exit 129 here); a poweroff (SIGINT) or a kill ends the host.
    while :; do
        rc=0
        ip netns exec "plab-$name" unshare --mount --uts --pid --ipc --cgroup --fork \
            --kill-child --propagation private "$0" 2 "$name" "$image" "$dir" "$loopdev" "$init" || rc=$?
        [ "$rc" = 129 ] || exit "$rc"
        echo "lab host $name: rebooting"
        rm -rf "$dir/work" && mkdir -p "$dir/work"
    done
fi

r=$dir/root
mount -t overlay overlay -o "lowerdir=$image,upperdir=$dir/upper,workdir=$dir/work" "$r"
mkdir -p "$r/var/lib/docker"
mount --bind "$dir/docker" "$r/var/lib/docker"
mount -t proc proc "$r/proc"
# Only net.* sysctls belong to the host; the rest of /proc/sys is the machine's.
mount --bind "$r/proc/sys" "$r/proc/sys"
mount -o remount,bind,ro "$r/proc/sys"
mount --bind "$r/proc/sys/net" "$r/proc/sys/net"
mount -o remount,bind,rw "$r/proc/sys/net"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$r/sys"
if [ "$init" = minimal ]; then
    : # no systemd: no cgroup hierarchies to show
elif [ "$(wc -l < /proc/self/cgroup)" = 1 ]; then
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$r/sys/fs/cgroup"
else
mount -t tmpfs -o mode=755,nosuid,nodev,noexec tmpfs "$r/sys/fs/cgroup"
while IFS=: read -r _ ctrls _; do
    case "$ctrls" in
        "") mkdir -p "$r/sys/fs/cgroup/unified"
            mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$r/sys/fs/cgroup/unified" ;;
        name=*) d=${ctrls#name=}; mkdir -p "$r/sys/fs/cgroup/$d"
            mount -t cgroup -o "nosuid,nodev,noexec,none,$ctrls" cgroup "$r/sys/fs/cgroup/$d" ;;
        *) mkdir -p "$r/sys/fs/cgroup/$ctrls"
            mount -t cgroup -o "nosuid,nodev,noexec,$ctrls" cgroup "$r/sys/fs/cgroup/$ctrls" ;;
    esac
done < /proc/self/cgroup
mount -o remount,ro,nosuid,nodev,noexec,mode=755 "$r/sys/fs/cgroup" || true
fi

d=$r/dev
mount -t tmpfs -o mode=755,nosuid tmpfs "$d"
mknod -m 666 "$d/null" c 1 3; mknod -m 666 "$d/zero" c 1 5; mknod -m 666 "$d/full" c 1 7
mknod -m 666 "$d/random" c 1 8; mknod -m 666 "$d/urandom" c 1 9; mknod -m 666 "$d/tty" c 5 0
mknod -m 666 "$d/fuse" c 10 229 || true
touch "$d/console"; mount --bind /dev/null "$d/console"
mkdir -m 755 "$d/pts"; mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$d/pts"
ln -s pts/ptmx "$d/ptmx"
mkdir -m 1777 "$d/shm"; mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$d/shm"
mkdir "$d/mqueue"; mount -t mqueue mqueue "$d/mqueue"
ln -s /proc/self/fd "$d/fd"; ln -s /proc/self/fd/0 "$d/stdin"
ln -s /proc/self/fd/1 "$d/stdout"; ln -s /proc/self/fd/2 "$d/stderr"
if [ -n "$loopdev" ]; then
    set -- $(stat -c '%t %T' "$loopdev")
    mknod -m 660 "$d/${loopdev#/dev/}" b "$((0x$1))" "$((0x$2))"
fi
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$r/run"
hostname "$name"

cd "$r"
mkdir -p .lab-old
pivot_root . .lab-old
cd /
umount -l /.lab-old
rmdir /.lab-old
if [ "$init" = minimal ]; then
    # A light host: tini as PID 1 and sshd, nothing else (about 3 MB).
    mkdir -p -m 755 /run/sshd
    exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/bin/tini -s -- /usr/sbin/sshd -D -e
fi
exec env -i container=provision-lab PATH=/usr/sbin:/usr/bin:/sbin:/bin /lib/systemd/systemd

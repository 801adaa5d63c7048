# The floor: what every tool must at least read on a host to know that the bootstrap +
# hardening roles hold, as one shell script sent over one SSH connection (sudo sh -s).
# Read-only. bench/compare.py runs it on all hosts in parallel with OpenSSH.
set -u
f() { for p in "$@"; do stat -c '%n %a %U %G %s' "$p" 2>/dev/null && sha256sum "$p" 2>/dev/null; done; }
if [ "${HARDENING_ONLY:-0}" = 0 ]; then
    hostname
    sed -n '/# BEGIN PROVISION CLUSTER NODES/,/# END PROVISION CLUSTER NODES/p' /etc/hosts
    f /etc/default/chrony /etc/timezone /etc/sudoers.d/provision-admins \
        /etc/apt/apt.conf.d/20auto-upgrades /etc/provision-managed
    dpkg-query -W -f '${Package} ${Status}\n' sudo curl ca-certificates gnupg tzdata chrony unattended-upgrades
    readlink /etc/localtime
    systemctl is-active chrony; systemctl is-enabled chrony
    getent passwd ops; f /home/ops/.ssh/authorized_keys
fi
sshd -T | grep -Ei '^(permitrootlogin|passwordauthentication|kbdinteractiveauthentication|permitemptypasswords|x11forwarding|maxauthtries|logingracetime|clientaliveinterval|clientalivecountmax|ciphers|macs|kexalgorithms|allowtcpforwarding|allowagentforwarding|loglevel) '
f /etc/ssh/sshd_config.d/50-provision-hardening.conf /etc/sysctl.d/90-provision-hardening.conf
for k in net.ipv4.ip_forward net.ipv4.conf.all.rp_filter net.ipv4.conf.default.rp_filter \
    net.ipv4.conf.all.accept_redirects net.ipv4.conf.default.accept_redirects \
    net.ipv4.conf.all.secure_redirects net.ipv4.conf.all.send_redirects \
    net.ipv4.conf.all.accept_source_route net.ipv4.conf.default.accept_source_route \
    net.ipv6.conf.all.accept_redirects net.ipv6.conf.all.accept_source_route \
    net.ipv4.tcp_syncookies net.ipv4.conf.all.log_martians \
    net.ipv4.icmp_echo_ignore_broadcasts net.ipv4.icmp_ignore_bogus_error_responses; do
    echo "$k $(cat /proc/sys/$(echo $k | tr . /))"
done
stat -c '%n %a %U %G' /etc/shadow /etc/gshadow /etc/passwd /etc/group /etc/ssh/sshd_config \
    /etc/sudoers /etc/sudoers.d /etc/crontab /etc/cron.d /etc/cron.daily /etc/docker 2>/dev/null
f /etc/docker/daemon.json

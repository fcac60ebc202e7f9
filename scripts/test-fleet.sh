#!/usr/bin/env bash
# A test fleet on this machine: one LB host and two Docker hosts, each a network namespace with its own
# address, its own Docker engine and its own sshd, which inventories/fleet reaches over SSH as real hosts.
# docs/architecture.md ("The test fleet") says how it is built and why.
set -eEuo pipefail

usage() {
	cat <<'EOF'
Usage: test-fleet.sh COMMAND

Commands:
  up               create the fleet (on failure, what was made is removed again)
  down             remove everything the fleet made; safe on a half-made fleet or none
  status           each host: address, dockerd, sshd, cut or not
  cut HOST         take HOST off the network: packets to and from it are dropped (a lost host)
  restore HOST     put HOST back on the network
  images [--host HOST].. [IMAGE..]
                   put the controller's images (default: every tenfold/* image) on each fleet host
                   (or those named), by docker save | ssh HOST docker load: only the images whose
                   ID differs there, in one stream per host
  ssh HOST [CMD..] a shell (or CMD) on HOST as root
  hosts            the host names, one a line

HOST is fleet-lb, fleet-d1 or fleet-d2 (lb, d1, d2 also work). Needs root.
The addresses are in inventories/fleet/hosts.yml too; a test checks that both agree. The controller is
10.231.15.1 on the fleet, and 10.231.15.100-199 are its too: source addresses for load tests' clients.
EOF
}

# Hosts and their addresses on the fleet's own /24 (nothing else on the machine uses 10.231.15.0/24).
HOSTS=(fleet-lb fleet-d1 fleet-d2)
declare -A ADDR=([fleet-lb]=10.231.15.10 [fleet-d1]=10.231.15.11 [fleet-d2]=10.231.15.12)
PREFIX=24
CONTROLLER_ADDR=10.231.15.1
# More controller addresses, for load tests' clients: the Internet's many sources, none on any allowlist.
CLIENT_ADDRS=$(echo 10.231.15.{100..199})
# The switch: a network namespace of its own holding the bridge. The fleet's frames are bridged there,
# never in the controller's namespace, whose firewall (Docker's FORWARD policy DROP, with br_netfilter
# sending bridged frames through it) they would otherwise cross; cut and restore are nft rules there too.
SWITCH=fleet-net
BRIDGE=br-fleet
# The controller's end of its link to the switch (the controller reaches the hosts through it).
UPLINK=fleet0
STATE=/var/lib/tenfold-fleet
RUN=/run/tenfold-fleet
KEY=$STATE/id_ed25519
KNOWN_HOSTS=$STATE/known_hosts
# Directories each host has of its own (a bind mount in its mount namespace): host path → name under
# $STATE/<host>/. Everything else (the project's checkout and venv among them) is the controller's.
PRIVATE_DIRS=(/etc/docker /etc/sysctl.d /etc/tenfold /var/lib/tenfold /var/log/tenfold /var/backups/tenfold)
# Bounds of every wait (tries × 0.5 s).
DOCKERD_TRIES=80
SSHD_TRIES=40
STOP_TRIES=40

log() { echo "test-fleet: $*" >&2; }
die() {
	log "$*"
	exit 1
}

host_name() {
	local h=$1
	[[ $h == fleet-* ]] || h=fleet-$h
	[[ -n ${ADDR[$h]:-} ]] || die "unknown host '$1' (hosts: ${HOSTS[*]})"
	echo "$h"
}

# A command in HOST's namespaces (network, mount, UTS). nsenter, not ip netns exec: that one remounts
# /sys and the cgroup mounts are lost with it (dockerd: "Devices cgroup isn't mounted").
in_host() {
	local h=$1
	shift
	nsenter --net="/run/netns/$h" --mount="$RUN/ns/$h.mnt" --uts="$RUN/ns/$h.uts" -- "$@"
}

in_switch() { nsenter --net="/run/netns/$SWITCH" -- "$@"; }

ssh_opts() {
	# a host cut mid-transfer fails the transfer in seconds (ServerAlive*), not when TCP gives up
	echo -i "$KEY" -o BatchMode=yes -o UserKnownHostsFile="$KNOWN_HOSTS" -o StrictHostKeyChecking=yes \
		-o ConnectTimeout=5 -o ServerAliveInterval=2 -o ServerAliveCountMax=3 -o LogLevel=ERROR
}

# A process that exited is gone even while it waits, a zombie, for its parent (here often PID 1) to reap it.
running() {
	local state
	state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
	[[ -n $state && $state != Z ]]
}

pid_alive() { [[ -s $1 ]] && running "$(cat "$1")"; }

# Stop the process of a pid file: TERM, a bounded wait, then KILL.
stop_pidfile() {
	local pidfile=$1 pid i
	[[ -s $pidfile ]] || return 0
	pid=$(cat "$pidfile")
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < STOP_TRIES; i++)); do
		running "$pid" || return 0
		sleep 0.5
	done
	log "pid $pid ($pidfile) still runs after $((STOP_TRIES / 2)) s: SIGKILL"
	kill -KILL "$pid" 2>/dev/null || true
}

# ---------------------------------------------------------------------------------------------- up

make_network() {
	ip netns add "$SWITCH"
	in_switch ip link set lo up
	in_switch ip link add "$BRIDGE" type bridge
	in_switch ip link set "$BRIDGE" up
	ip link add "$UPLINK" type veth peer name veth-fleet-ctl
	ip link set veth-fleet-ctl netns "$SWITCH"
	in_switch ip link set veth-fleet-ctl master "$BRIDGE" up
	ip addr add "$CONTROLLER_ADDR/$PREFIX" dev "$UPLINK"
	for client in $CLIENT_ADDRS; do
		ip addr add "$client/32" dev "$UPLINK"
	done
	ip link set "$UPLINK" up
	# cut HOST adds HOST's switch port to this set: its IPv4/IPv6 frames are dropped, ARP still passes,
	# so connections to it time out as to a host that is gone (not "no route to host").
	in_switch nft -f - <<EOF
table bridge tenfold_fleet {
	set cut { type ifname; }
	chain forward {
		type filter hook forward priority 0; policy accept;
		iifname @cut meta protocol { ip, ip6 } drop
		oifname @cut meta protocol { ip, ip6 } drop
	}
}
EOF
}

make_host_network() {
	local h=$1 port=veth-fleet-${1#fleet-}
	ip netns add "$h"
	ip link add "$port" type veth peer name eth0 netns "$h"
	ip link set "$port" netns "$SWITCH"
	in_switch ip link set "$port" master "$BRIDGE" up
	ip -n "$h" link set lo up
	ip -n "$h" addr add "${ADDR[$h]}/$PREFIX" dev eth0
	ip -n "$h" link set eth0 up
	# no default route: a fleet host reaches the fleet, and nothing else
}

# The host's mount and UTS namespaces, persisted as files under $RUN/ns (as ip netns does for network
# namespaces). The mount namespace is a slave of the controller's: mounts made in it (the host's own
# directories, its engine's container filesystems) stay in it, and unmounts on the controller (its
# Docker engine's containers going away) reach it, so it holds none of them.
make_host_namespaces() {
	local h=$1 dir mountpoint
	touch "$RUN/ns/$h.mnt" "$RUN/ns/$h.uts"
	unshare --mount="$RUN/ns/$h.mnt" --uts="$RUN/ns/$h.uts" --propagation slave hostname "$h"
	# the other hosts' namespace files are not this host's business
	in_host "$h" umount -l "$RUN/ns"
	for dir in "${PRIVATE_DIRS[@]}"; do
		mountpoint=$dir
		# a mount point needs a directory on the controller too; it stays (the project's own path, which
		# the controller's stacks may be using by the time the fleet goes down)
		mkdir -p "$mountpoint"
		mkdir -p "$STATE/$h/${dir//\//_}"
		in_host "$h" mount --bind "$STATE/$h/${dir//\//_}" "$mountpoint"
	done
}

# The host's Docker engine: its own config file (/etc/docker/daemon.json of the host's mount namespace),
# data-root, exec-root, pid file, socket and cgroup parent. In the host's mount namespace its socket is
# also /run/docker.sock, the default a real host has, so nothing on the host needs DOCKER_HOST.
start_dockerd() {
	local h=$1 conf i
	conf=$STATE/$h/_etc_docker/daemon.json
	mkdir -p "$RUN/$h"
	cat >"$conf" <<EOF
{
  "data-root": "$STATE/$h/docker",
  "storage-driver": "fuse-overlayfs",
  "log-driver": "json-file",
  "log-opts": {"max-size": "10m", "max-file": "3"}
}
EOF
	in_host "$h" setsid dockerd --config-file /etc/docker/daemon.json --exec-root "$RUN/$h/docker" \
		-H "unix://$RUN/$h/docker.sock" --pidfile "$RUN/$h/dockerd.pid" --cgroup-parent "tenfold-fleet-${h#fleet-}" \
		>>"$STATE/$h/dockerd.log" 2>&1 </dev/null &
	for ((i = 0; i < DOCKERD_TRIES; i++)); do
		if [[ -S $RUN/$h/docker.sock ]] && timeout 5 docker -H "unix://$RUN/$h/docker.sock" version >/dev/null 2>&1; then
			if [[ ! -e /run/docker.sock ]]; then # a controller without an engine of its own
				touch /run/docker.sock
				echo /run/docker.sock >"$STATE/created-docker-sock"
			fi
			in_host "$h" mount --bind "$RUN/$h/docker.sock" /run/docker.sock
			return 0
		fi
		sleep 0.5
	done
	tail -n 20 "$STATE/$h/dockerd.log" >&2 || true
	die "$h: dockerd did not answer within $((DOCKERD_TRIES / 2)) s (log: $STATE/$h/dockerd.log)"
}

make_keys() {
	mkdir -p "$STATE"
	chmod 0755 "$STATE"
	ssh-keygen -q -t ed25519 -N "" -C tenfold-fleet -f "$KEY"
	cp "$KEY.pub" "$STATE/authorized_keys"
	: >"$KNOWN_HOSTS"
}

start_sshd() {
	local h=$1 i
	local dir=$STATE/$h/ssh
	mkdir -p "$dir"
	ssh-keygen -q -t ed25519 -N "" -C "$h" -f "$dir/ssh_host_ed25519_key"
	echo "${ADDR[$h]} $(cut -d' ' -f1,2 "$dir/ssh_host_ed25519_key.pub")" >>"$KNOWN_HOSTS"
	cat >"$dir/sshd_config" <<EOF
ListenAddress ${ADDR[$h]}:22
HostKey $dir/ssh_host_ed25519_key
PidFile $RUN/$h/sshd.pid
AuthorizedKeysFile $STATE/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
	mkdir -p /run/sshd # sshd's privilege separation directory, as the package has it
	in_host "$h" /usr/sbin/sshd -f "$dir/sshd_config" -E "$STATE/$h/sshd.log"
	for ((i = 0; i < SSHD_TRIES; i++)); do
		if timeout 2 bash -c "exec 3<>/dev/tcp/${ADDR[$h]}/22" 2>/dev/null; then
			return 0
		fi
		sleep 0.5
	done
	die "$h: sshd did not listen within $((SSHD_TRIES / 2)) s (log: $STATE/$h/sshd.log)"
}

up_failed() {
	trap - ERR INT TERM
	log "up failed: removing what it made"
	cmd_down
	exit 1
}

cmd_up() {
	local h
	[[ -x /usr/sbin/sshd ]] || die "no /usr/sbin/sshd: make deps installs openssh-server"
	command -v dockerd fuse-overlayfs nft >/dev/null || die "needs dockerd, fuse-overlayfs and nft (make deps)"
	if [[ -e $RUN || -e $STATE || -e /run/netns/$SWITCH ]]; then
		die "a fleet (or what is left of one) exists: run test-fleet.sh down first"
	fi
	trap up_failed ERR INT TERM
	make_keys
	mkdir -p "$RUN/ns"
	# a private mount of its own, so that the namespace files bound into it propagate nowhere
	mount --bind "$RUN/ns" "$RUN/ns"
	mount --make-private "$RUN/ns"
	make_network
	for h in "${HOSTS[@]}"; do
		make_host_network "$h"
		make_host_namespaces "$h"
		start_dockerd "$h"
		start_sshd "$h"
		log "$h up at ${ADDR[$h]}"
	done
	trap - ERR INT TERM
	log "fleet up: ansible -i inventories/fleet all -m ping"
}

# -------------------------------------------------------------------------------------------- down

# Remove every container of the host's engine, then stop sshd, dockerd and whatever else still runs
# in the host's network namespace (ssh sessions, containerd shims).
stop_host() {
	local h=$1 sock=$RUN/$1/docker.sock ids pid pids i
	if [[ -S $sock ]] && ids=$(timeout 20 docker -H "unix://$sock" ps -aq 2>/dev/null) && [[ -n $ids ]]; then
		# shellcheck disable=SC2086 # one ID a word
		timeout 60 docker -H "unix://$sock" rm -f $ids >/dev/null 2>&1 || log "$h: removing its containers failed"
	fi
	stop_pidfile "$RUN/$h/sshd.pid"
	stop_pidfile "$RUN/$h/dockerd.pid"
	[[ -e /run/netns/$h ]] || return 0
	for ((i = 0; i < STOP_TRIES; i++)); do
		pids=""
		for pid in $(ip netns pids "$h" 2>/dev/null); do
			running "$pid" && pids="$pids $pid"
		done
		[[ -n $pids ]] || break
		for pid in $pids; do kill -"$([[ $i -lt 10 ]] && echo TERM || echo KILL)" "$pid" 2>/dev/null || true; done
		sleep 0.5
	done
}

stop_ssh_clients() {
	local cmdline pid
	for cmdline in /proc/[0-9]*/cmdline; do
		pid=${cmdline#/proc/}
		pid=${pid%/cmdline}
		[[ $(cat "/proc/$pid/comm" 2>/dev/null) == ssh ]] || continue
		[[ $(tr '\0' ' ' <"$cmdline" 2>/dev/null) == *"$KEY"* ]] || continue
		kill -TERM "$pid" 2>/dev/null || true
	done
}

cmd_down() {
	local h dir cg
	# best effort to the end: one step failing must not leave the rest in place
	set +e
	trap - ERR
	for h in "${HOSTS[@]}"; do
		stop_host "$h"
	done
	# SSH connections the controller keeps open to the hosts (Ansible's ControlPersist masters), found by
	# the fleet's key on their command line
	stop_ssh_clients
	# mounts the controller's namespace has under the fleet's directories (the namespace files)
	findmnt -rn -o TARGET | grep -E "^($RUN|$STATE)(/|$)" | sort -r | while read -r dir; do
		umount -l "$dir" || log "umount $dir failed"
	done
	for h in "${HOSTS[@]}" "$SWITCH"; do
		[[ -e /run/netns/$h ]] && ip netns del "$h"
	done
	ip link show "$UPLINK" >/dev/null 2>&1 && ip link del "$UPLINK"
	# the cgroups the hosts' engines made for their containers
	for cg in /sys/fs/cgroup/*/tenfold-fleet-* /sys/fs/cgroup/tenfold-fleet-*; do
		[[ -d $cg ]] && find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	# the empty file up made as a mount point (a socket there now is a real engine's)
	if [[ -f $STATE/created-docker-sock && -f /run/docker.sock && ! -s /run/docker.sock ]]; then
		rm -f /run/docker.sock
	fi
	rm -rf "$RUN" "$STATE"
	log "fleet down"
}

# ------------------------------------------------------------------------------------------- other

# (the listing is read whole first: grep -q in a pipe may stop nft with SIGPIPE, which pipefail makes a
# failure of the match)
is_cut() {
	local set
	set=$(in_switch nft list set bridge tenfold_fleet cut 2>/dev/null) || return 1
	[[ $set == *"\"veth-fleet-${1#fleet-}\""* ]]
}

cmd_cut() {
	local h
	h=$(host_name "$1")
	[[ -e /run/netns/$SWITCH ]] || die "no fleet: run test-fleet.sh up"
	is_cut "$h" || in_switch nft add element bridge tenfold_fleet cut "{ \"veth-fleet-${h#fleet-}\" }"
	log "$h cut"
}

cmd_restore() {
	local h
	h=$(host_name "$1")
	[[ -e /run/netns/$SWITCH ]] || die "no fleet: run test-fleet.sh up"
	! is_cut "$h" || in_switch nft delete element bridge tenfold_fleet cut "{ \"veth-fleet-${h#fleet-}\" }"
	log "$h restored"
}

cmd_status() {
	local h dockerd sshd cut
	printf '%-10s %-14s %-8s %-8s %s\n' HOST ADDRESS DOCKERD SSHD NETWORK
	for h in "${HOSTS[@]}"; do
		dockerd=down sshd=down cut=-
		pid_alive "$RUN/$h/dockerd.pid" && dockerd=up
		pid_alive "$RUN/$h/sshd.pid" && sshd=up
		if [[ -e /run/netns/$SWITCH ]]; then
			cut=connected
			is_cut "$h" && cut="cut"
		fi
		printf '%-10s %-14s %-8s %-8s %s\n' "$h" "${ADDR[$h]}" "$dockerd" "$sshd" "$cut"
	done
}

cmd_ssh() {
	local h
	h=$(host_name "$1")
	shift
	# shellcheck disable=SC2046 # the options are words
	exec ssh $(ssh_opts) "root@${ADDR[$h]}" "$@"
}

# The controller's image IDs against each host's; the stale ones go in one docker save stream per host
# (layers the images share travel once).
cmd_images() {
	local h image local_id remote_id stale
	local -a images targets=()
	while [[ ${1:-} == --host ]]; do
		(($# > 1)) || die "images --host HOST"
		targets+=("$(host_name "$2")")
		shift 2
	done
	((${#targets[@]} > 0)) || targets=("${HOSTS[@]}")
	if (($# > 0)); then
		images=("$@")
	else
		mapfile -t images < <(docker image ls --format '{{.Repository}}:{{.Tag}}' 'tenfold/*' | grep -v '<none>' | sort)
	fi
	((${#images[@]} > 0)) || die "no images to send"
	for h in "${targets[@]}"; do
		stale=()
		for image in "${images[@]}"; do
			local_id=$(docker image inspect -f '{{.Id}}' "$image") || die "no image $image here"
			# shellcheck disable=SC2046 # the options are words
			remote_id=$(ssh $(ssh_opts) "root@${ADDR[$h]}" docker image inspect -f '{{.Id}}' "$image" 2>/dev/null) || remote_id=""
			if [[ $local_id == "$remote_id" ]]; then
				echo "$h $image unchanged"
			else
				stale+=("$image")
			fi
		done
		((${#stale[@]} > 0)) || continue
		# shellcheck disable=SC2046 # the options are words
		docker save "${stale[@]}" | ssh $(ssh_opts) "root@${ADDR[$h]}" docker load -q >/dev/null
		for image in "${stale[@]}"; do echo "$h $image sent"; done
	done
}

main() {
	(($# > 0)) || {
		usage >&2
		exit 2
	}
	local cmd=$1
	shift
	case $cmd in
	help | -h | --help) usage ;;
	hosts) printf '%s\n' "${HOSTS[@]}" ;;
	status) cmd_status ;;
	images) cmd_images "$@" ;;
	ssh)
		(($# > 0)) || die "ssh HOST [CMD..]"
		cmd_ssh "$@"
		;;
	up | down | cut | restore)
		[[ $EUID -eq 0 ]] || die "needs root"
		case $cmd in
		up) cmd_up ;;
		down) cmd_down ;;
		cut | restore)
			(($# == 1)) || die "$cmd HOST"
			"cmd_$cmd" "$1"
			;;
		esac
		;;
	*)
		usage >&2
		exit 2
		;;
	esac
}

main "$@"

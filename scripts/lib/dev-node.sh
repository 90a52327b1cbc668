# shellcheck shell=bash
# The dev cluster's node, sourced by scripts/dev-cluster: kube-scheduler,
# containerd with runc, a CNI bridge with host-local addresses, the kubelet and
# kube-proxy, so that the chart runs as real pods on this machine.
#
# A node belongs to the machine, not to a checkout: containerd's and the kubelet's
# directories ($NODE_RUN, $NODE_LIB), the bridge, the iptables rules, the pods'
# cgroups and a few kernel settings. So one runs at a time; $NODE_RUN/owner names
# the checkout that started it, and `down` there (or the next `up --node` anywhere,
# once its processes are gone) removes all of it and puts the settings back.
#
# Nothing can be pulled: the pod sandbox (pause) image is built here with the
# node's binaries and imported into containerd; the operator's image comes from
# `make image`.
#
# The network: pods get addresses in $POD_CIDR on the bridge $NODE_BRIDGE, whose
# own address $NODE_IP is the node's. kube-proxy programs the Services' ClusterIPs
# ($SERVICE_CIDR, routed onto the bridge so that nothing addressed there leaves the
# machine). The apiserver keeps listening on loopback only; pods reach it through
# the `kubernetes` Service, whose endpoint is a relay on $NODE_IP. Pod traffic to
# anywhere but the bridge is dropped: pods talk to each other and to this machine.

NODE_NAME=anypost-dev-node
NODE_BRIDGE=anypost0
POD_CIDR=10.244.0.0/24
NODE_IP=10.244.0.1
SERVICE_CIDR=10.96.0.0/24
KUBERNETES_SERVICE_IP=10.96.0.1
NODE_RUN=/run/anypost-dev-node
NODE_LIB=/var/lib/anypost-dev-node
NODE_STATE=$STATE/node
NODE_BIN=${ANYPOST_CACHE:-${HOME:-/root}/.cache/anypost-operator}/node/$K8S_VERSION/bin
# In start order.
NODE_COMPONENTS=(apiserver-relay kube-scheduler containerd kubelet kube-proxy)
# Bumped whenever the node's configuration changes: `up --node` restarts an older one.
NODE_CONFIG=2
PAUSE_IMAGE=localhost/anypost-dev/pause:$K8S_VERSION
CONTAINERD_SOCK=$NODE_RUN/containerd/containerd.sock
RUNC_ROOT=$NODE_RUN/runc
FIREWALL_CHAIN=ANYPOST-DEV-NODE
KUBELET_HEALTHZ_PORT=10248
KUBE_PROXY_HEALTHZ_PORT=10256
KUBE_PROXY_METRICS_PORT=10249
# The kernel settings the node changes, the kubelet's own among them; `down` puts
# back the values they had before.
NODE_SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables vm.overcommit_memory vm.panic_on_oom
	kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)
NODE_PROGRAMS=(containerd containerd-shim-runc-v2 runc ctr buildah socat iptables iptables-save iptables-restore ip)

# ---------------------------------------------------------------------------
# What the node needs, and building it

cni_bin_dir() {
	local d
	for d in ${ANYPOST_CNI_BIN_DIR:-} /usr/lib/cni /opt/cni/bin; do
		if [[ -x $d/bridge && -x $d/host-local && -x $d/loopback ]]; then
			echo "$d"
			return 0
		fi
	done
	return 1
}

node_tools_present() {
	local p missing=()
	for p in "${NODE_PROGRAMS[@]}"; do
		command -v "$p" >/dev/null || missing+=("$p")
	done
	cni_bin_dir >/dev/null || missing+=("the CNI plugins bridge, host-local and loopback")
	((${#missing[@]} == 0)) ||
		die "the node needs ${missing[*]}: scripts/install-test-deps installs them (Debian packages containerd, runc, containernetworking-plugins, buildah, iptables, socat)"
}

node_owner() { cat "$NODE_RUN/owner" 2>/dev/null || true; }

# True if anything of a node is on this machine, running or left behind.
node_traces() {
	[[ -n $(node_owner) || -e $NODE_RUN || -e $NODE_LIB ]] || ip link show "$NODE_BRIDGE" >/dev/null 2>&1
}

# True while any component of the node started from state directory $1 runs.
node_alive_in() {
	local c
	for c in "${NODE_COMPONENTS[@]}"; do
		is_ours "$c" "$1" && return 0
	done
	return 1
}

node_preflight() {
	((EUID == 0)) || die "a node needs root (containerd, the kubelet, network namespaces, iptables); run scripts/dev-cluster up --node as root"
	node_tools_present
	[[ -d /proc/sys/net/bridge ]] || modprobe br_netfilter 2>/dev/null || true
	[[ -d /proc/sys/net/bridge ]] ||
		die "the kernel has no bridge netfilter (br_netfilter): Services could not reach pods on the node's bridge"
	local owner
	owner=$(node_owner)
	if [[ -n $owner && $owner != "$STATE" ]] && node_alive_in "$owner"; then
		die "a node started from another checkout runs on this machine ($owner), and only one can: stop it there with scripts/dev-cluster down"
	fi
}

build_node() {
	local out=$1 go
	go=$(find_go)
	"$go" build -buildvcs=false -ldflags "$(ldflags)" -o "$out/" \
		k8s.io/kubernetes/cmd/kubelet \
		k8s.io/kubernetes/cmd/kube-proxy \
		k8s.io/kubernetes/cmd/kube-scheduler
	# The sandbox's only file: static, so the image needs nothing else.
	CGO_ENABLED=0 "$go" build -buildvcs=false -ldflags "-s -w" -o "$out/pause" ./cmd/pause

	local ctx=$out/pause-image store=$out/buildah
	mkdir -p "$ctx"
	cp "$out/pause" "$ctx/pause"
	cat >"$ctx/Containerfile" <<'EOF'
FROM scratch
COPY pause /pause
USER 65535:65535
ENTRYPOINT ["/pause"]
EOF
	local buildah=(buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs)
	"${buildah[@]}" build --quiet --layers=false -t "$PAUSE_IMAGE" -f "$ctx/Containerfile" "$ctx"
	"${buildah[@]}" push --quiet "$PAUSE_IMAGE" "oci-archive:$out/pause.tar:$PAUSE_IMAGE"
	rm -rf "$ctx" "$store"
}

ensure_node_built() {
	find_go >/dev/null
	build_cached "$NODE_BIN" "the node: kubelet, kube-proxy and kube-scheduler $K8S_VERSION, and the pod sandbox image" \
		build_node "node-recipe 1"
}

# ---------------------------------------------------------------------------
# Small helpers

write_sysctl() { echo "$2" >"/proc/sys/${1//.//}"; }
read_sysctl() { cat "/proc/sys/${1//.//}"; }

# GET http://127.0.0.1:$1$2 answers 200.
http_ok() {
	local reply
	reply=$(
		exec 2>/dev/null
		exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&3
		timeout 5 head -n 1 <&3
	) || return 1
	[[ $reply == "HTTP/1."?" 200"* ]]
}

kubectl_admin() { "$BIN/kubectl" --kubeconfig "$KUBECONFIG_OUT" --request-timeout=10s "$@"; }

relay_ready() {
	[[ $("$BIN/kubectl" --kubeconfig "$KUBECONFIG_OUT" --server "https://$NODE_IP:$APISERVER_PORT" \
		--request-timeout=5s get --raw /readyz </dev/null 2>/dev/null) == ok ]]
}

scheduler_healthy() {
	[[ $("$BIN/kubectl" --kubeconfig "$KUBECONFIG_OUT" --server "https://127.0.0.1:$SCHEDULER_PORT" \
		--request-timeout=5s get --raw /healthz </dev/null 2>/dev/null) == ok ]]
}

containerd_ready() { ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; }

kubelet_healthy() { http_ok "$KUBELET_HEALTHZ_PORT" /healthz; }

kube_proxy_healthy() { http_ok "$KUBE_PROXY_HEALTHZ_PORT" /healthz; }

# The Node is Ready and carries no taint (the not-ready taint goes once it is).
node_schedulable() {
	local out
	out=$(kubectl_admin get node "$NODE_NAME" \
		-o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}/{.spec.taints}' 2>/dev/null) || return 1
	[[ $out == True/ ]]
}

node_running_here() {
	local c
	[[ $(node_owner) == "$STATE" && $(cat "$NODE_STATE/config" 2>/dev/null) == "$NODE_CONFIG" ]] || return 1
	for c in "${NODE_COMPONENTS[@]}"; do is_ours "$c" || return 1; done
}

# ---------------------------------------------------------------------------
# Up

node_up() {
	# shellcheck disable=SC1091
	[[ -f $NODE_STATE/ports.env ]] && source "$NODE_STATE/ports.env"
	if node_running_here; then
		if kubelet_healthy && kube_proxy_healthy && node_schedulable; then
			say "node already running: $NODE_NAME ($NODE_IP), containerd at $CONTAINERD_SOCK"
			return 0
		fi
		say "the running node is not healthy; starting it again"
	fi
	if node_traces; then node_teardown; fi
	if ! node_start; then
		say "removing what was made of the node (its logs stay in $LOGS)"
		node_teardown >/dev/null 2>&1 || true
		return 1
	fi
	say "node ready: $NODE_NAME ($NODE_IP), pods in $POD_CIDR, Services in $SERVICE_CIDR"
	say "  images: ctr --address $CONTAINERD_SOCK -n k8s.io images ls   (make image imports the operator's)"
}

node_start() {
	mkdir -p "$NODE_RUN" "$NODE_LIB" "$NODE_STATE/cni"
	echo "$STATE" >"$NODE_RUN/owner"
	local k
	for k in "${NODE_SYSCTLS[@]}"; do
		printf '%s=%s\n' "$k" "$(read_sysctl "$k")"
	done >"$NODE_RUN/sysctl.saved"

	say "node network: bridge $NODE_BRIDGE ($NODE_IP), pods $POD_CIDR, Services $SERVICE_CIDR"
	ip link add "$NODE_BRIDGE" type bridge
	ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$NODE_BRIDGE"
	ip link set "$NODE_BRIDGE" up
	ip route replace "$SERVICE_CIDR" dev "$NODE_BRIDGE"
	write_sysctl net.ipv4.ip_forward 1
	write_sysctl net.bridge.bridge-nf-call-iptables 1
	iptables -w -N "$FIREWALL_CHAIN"
	iptables -w -A "$FIREWALL_CHAIN" -s "$POD_CIDR" ! -o "$NODE_BRIDGE" -j DROP \
		-m comment --comment "anypost dev node: pods reach only the bridge and this machine"
	iptables -w -I FORWARD 1 -j "$FIREWALL_CHAIN"

	SCHEDULER_PORT=$(free_ports 1)
	echo "SCHEDULER_PORT=$SCHEDULER_PORT" | write_atomically "$NODE_STATE/ports.env"

	say "the apiserver for pods: the kubernetes Service ($KUBERNETES_SERVICE_IP:443) → $NODE_IP:$APISERVER_PORT"
	start_program apiserver-relay "$(command -v socat)" -lf "$LOGS/apiserver-relay.log" \
		"TCP-LISTEN:$APISERVER_PORT,bind=$NODE_IP,reuseaddr,fork" "TCP:127.0.0.1:$APISERVER_PORT"
	wait_for apiserver-relay relay_ready || return 1
	kubectl_admin apply --server-side --force-conflicts --field-manager=anypost-dev-cluster -f - >/dev/null <<EOF || return 1
# The apiserver listens on loopback; pods reach it through this endpoint, a relay
# on the node's address (its reconciler is off: nothing else writes here).
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels:
    kubernetes.io/service-name: kubernetes
    endpointslice.kubernetes.io/managed-by: anypost-dev-cluster
addressType: IPv4
endpoints:
- addresses: ["$NODE_IP"]
  conditions: {ready: true}
ports:
- {name: https, port: $APISERVER_PORT, protocol: TCP}
---
# What a kubelet may do (the Node authorizer's job in a production cluster).
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: anypost-dev-node
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:node"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "system:node:$NODE_NAME"}
EOF

	kubeconfig system:kube-scheduler "$PKI/scheduler.crt" "$PKI/scheduler.key" "$APISERVER_PORT" |
		write_atomically "$NODE_STATE/scheduler.kubeconfig"
	start_program kube-scheduler "$NODE_BIN/kube-scheduler" \
		--kubeconfig "$NODE_STATE/scheduler.kubeconfig" \
		--authentication-kubeconfig "$NODE_STATE/scheduler.kubeconfig" \
		--authorization-kubeconfig "$NODE_STATE/scheduler.kubeconfig" \
		--bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
		--tls-cert-file "$PKI/scheduler-serving.crt" --tls-private-key-file "$PKI/scheduler-serving.key" \
		--leader-elect=false --profiling=false
	say "waiting for kube-scheduler…"
	wait_for kube-scheduler scheduler_healthy || return 1

	write_containerd_config
	start_program containerd "$(command -v containerd)" --config "$NODE_STATE/containerd.toml" \
		--root "$NODE_LIB/containerd" --state "$NODE_RUN/containerd" --address "$CONTAINERD_SOCK"
	say "waiting for containerd…"
	wait_for containerd containerd_ready || return 1
	ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$NODE_BIN/pause.tar" >/dev/null ||
		{
			say "error: importing the pause image into containerd failed"
			return 1
		}

	write_kubelet_config
	kubeconfig "system:node:$NODE_NAME" "$PKI/kubelet.crt" "$PKI/kubelet.key" "$APISERVER_PORT" |
		write_atomically "$NODE_STATE/kubelet.kubeconfig"
	start_program kubelet "$NODE_BIN/kubelet" \
		--config "$NODE_STATE/kubelet.yaml" \
		--kubeconfig "$NODE_STATE/kubelet.kubeconfig" \
		--hostname-override "$NODE_NAME" --node-ip "$NODE_IP" \
		--root-dir "$NODE_LIB/kubelet" --cert-dir "$NODE_LIB/kubelet/pki" \
		--v=2
	say "waiting for the kubelet and for node $NODE_NAME to be Ready…"
	wait_for kubelet kubelet_healthy || return 1
	wait_for kubelet node_schedulable || return 1

	write_kube_proxy_config
	kubeconfig system:kube-proxy "$PKI/kube-proxy.crt" "$PKI/kube-proxy.key" "$APISERVER_PORT" |
		write_atomically "$NODE_STATE/kube-proxy.kubeconfig"
	start_program kube-proxy "$NODE_BIN/kube-proxy" --config "$NODE_STATE/kube-proxy.yaml" --v=2
	say "waiting for kube-proxy…"
	wait_for kube-proxy kube_proxy_healthy || return 1
	echo "$NODE_CONFIG" >"$NODE_STATE/config"
}

write_containerd_config() {
	cat >"$NODE_STATE/containerd.toml" <<EOF
# containerd for the anypost dev node (scripts/dev-cluster up --node).
version = 2
root = "$NODE_LIB/containerd"
state = "$NODE_RUN/containerd"
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
]

[grpc]
  address = "$CONTAINERD_SOCK"

[plugins."io.containerd.internal.v1.opt"]
  path = "$NODE_LIB/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  disable_apparmor = true
  # Where root lacks CAP_SYS_RESOURCE (this machine's does), no process may lower
  # its oom_score_adj; the kubelet asks -998 for every pod sandbox, and runc fails
  # to start it ("can't get final child's PID from pipe"). Never ask for less than
  # containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$RUNC_ROOT"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$(cni_bin_dir)"
    conf_dir = "$NODE_STATE/cni"
EOF
	cat >"$NODE_STATE/cni/10-anypost-dev.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "anypost-dev",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$POD_CIDR", "gateway": "$NODE_IP" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$NODE_LIB/cni-ipam"
      }
    }
  ]
}
EOF
}

write_kubelet_config() {
	# No cluster DNS here: pods resolve nothing outside the cluster, and ask an
	# address inside themselves where nothing answers, so lookups fail at once.
	cat >"$NODE_STATE/resolv.conf" <<EOF
nameserver 127.0.0.1
EOF
	cat >"$NODE_STATE/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1, which kubelet 1.35 runs on only when told to.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
resolvConf: $NODE_STATE/resolv.conf
podLogsDir: $NODE_LIB/pod-logs
volumePluginDir: $NODE_LIB/volume-plugins
failSwapOn: false
serializeImagePulls: false
# Images cannot be pulled again here: never collect them, and evict only when the
# disk is really full. Absolute amounts, not shares: on a large disk shared with
# other work (builds, caches), 1% free can be many gigabytes the node never needs,
# and a kubelet past its threshold never becomes Ready.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 100Mi, nodefs.inodesFree: 1%, imagefs.available: 100Mi}
EOF
}

write_kube_proxy_config() {
	cat >"$NODE_STATE/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $NODE_STATE/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
mode: iptables
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:$KUBE_PROXY_HEALTHZ_PORT
metricsBindAddress: 127.0.0.1:$KUBE_PROXY_METRICS_PORT
nodePortAddresses: ["$NODE_IP/32"]
iptables:
  localhostNodePorts: false
# Leave the machine's connection-tracking limits and timeouts as they are.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# ---------------------------------------------------------------------------
# Down

# Tears the node down unless it belongs to another checkout whose node still runs.
node_down_if_ours() {
	local owner
	node_traces || return 0
	owner=$(node_owner)
	if [[ -n $owner && $owner != "$STATE" ]] && node_alive_in "$owner"; then
		say "the node on this machine belongs to another checkout ($owner); left running"
		return 0
	fi
	if ((EUID != 0)); then
		say "a node's leftovers are on this machine, but removing them needs root"
		return 0
	fi
	node_teardown
}

# Processes whose command line names the node's directories: containerd's shims,
# and anything a crashed node left behind.
node_process_pids() {
	local pid cmd
	for pid in /proc/[0-9]*; do
		pid=${pid#/proc/}
		((pid == $$ || pid == BASHPID)) && continue
		cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline") || continue
		if [[ $cmd == *"$NODE_RUN/"* || $cmd == *"$NODE_LIB/"* ]]; then
			echo "$pid"
		fi
	done
}

# Mount points at or below the node's directories, deepest first.
node_mounts() {
	awk -v run="$NODE_RUN" -v lib="$NODE_LIB" '
		$5 == run || $5 == lib || index($5, run "/") == 1 || index($5, lib "/") == 1 { print $5 }
	' /proc/self/mountinfo | sort -r
}

node_teardown() {
	local c was=() i
	for c in "${NODE_COMPONENTS[@]}"; do
		if is_ours "$c"; then was+=("$c"); fi
	done
	# The kubelet first, so that it restarts nothing that is being removed.
	for c in kubelet kube-proxy kube-scheduler apiserver-relay; do stop_component "$c"; done

	# Every container and pod sandbox, through runc itself.
	local root id
	for root in "$RUNC_ROOT"/*/; do
		[[ -d $root ]] || continue
		for id in $(runc --root "$root" list -q 2>/dev/null); do
			runc --root "$root" delete --force "$id" >/dev/null 2>&1 || true
		done
	done
	stop_component containerd
	local pids
	pids=$(node_process_pids)
	if [[ -n $pids ]]; then
		# shellcheck disable=SC2086
		kill -TERM $pids 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			[[ -n $(node_process_pids) ]] || break
			sleep 0.1
		done
		pids=$(node_process_pids)
		# shellcheck disable=SC2086
		[[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
	fi

	# Container root filesystems, volumes, network namespaces: unmounted before
	# their directories go.
	local mp
	for ((i = 0; i < 3; i++)); do
		while read -r mp; do
			[[ -n $mp ]] || continue
			umount "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
		done < <(node_mounts)
	done
	if [[ -n $(node_mounts) ]]; then
		say "error: could not unmount $(node_mounts | tr '\n' ' '); leaving $NODE_RUN and $NODE_LIB in place"
		return 1
	fi

	# The network: the pods' veths went with their namespaces; the bridge, the
	# Services' route with it, and every iptables rule the node made.
	local link
	for link in $(ip -o link show master "$NODE_BRIDGE" 2>/dev/null | awk -F': ' '{ print $2 }' | cut -d@ -f1); do
		ip link del "$link" 2>/dev/null || true
	done
	ip link del "$NODE_BRIDGE" 2>/dev/null || true
	node_iptables_clean

	# The pods' cgroups, innermost first (the kubelet made them all under kubepods).
	local d
	for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/kubepods; do
		if [[ -d $d ]]; then find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
	done

	if [[ -f $NODE_RUN/sysctl.saved ]]; then
		local k v
		while IFS='=' read -r k v; do
			write_sysctl "$k" "$v" 2>/dev/null || say "could not restore $k=$v"
		done <"$NODE_RUN/sysctl.saved"
	fi

	rm -rf --one-file-system "$NODE_RUN" "$NODE_LIB" "$NODE_STATE"
	for c in "${NODE_COMPONENTS[@]}"; do rm -f "$STATE/$c.pid"; done
	if ((${#was[@]})); then
		say "stopped the node (${was[*]}) and removed its pods, mounts, network, iptables rules and containerd state"
	else
		say "removed what a previous node left on this machine"
	fi
}

# kube-proxy's own cleanup, then whatever KUBE- chains remain (the kubelet's
# canaries) and the node's firewall chain, in both address families.
node_iptables_clean() {
	if [[ -x $NODE_BIN/kube-proxy ]]; then
		"$NODE_BIN/kube-proxy" --cleanup >>"$LOGS/kube-proxy.log" 2>&1 || true
	fi
	local family save restore rules
	for family in iptables ip6tables; do
		save=$family-save
		restore=$family-restore
		command -v "$save" >/dev/null || continue
		rules=$("$save" 2>/dev/null) || continue
		if grep -qE "KUBE-|$FIREWALL_CHAIN" <<<"$rules"; then
			grep -vE "KUBE-|$FIREWALL_CHAIN" <<<"$rules" | "$restore" -w 2>/dev/null ||
				say "could not remove the node's $family rules; see: $save | grep -E 'KUBE-|$FIREWALL_CHAIN'"
		fi
	done
}

# Imports the image archive $1 (OCI or docker) into the node's containerd, where
# the kubelet finds it; exit status 3 when no node of this checkout runs.
node_import() {
	[[ -f ${1:-} ]] || die "usage: $0 import IMAGE.tar"
	if [[ $(node_owner) != "$STATE" ]] || ! is_ours containerd || ! containerd_ready; then
		say "no node of this checkout runs (scripts/dev-cluster up --node)"
		exit 3
	fi
	ctr --address "$CONTAINERD_SOCK" -n k8s.io images import "$1" >&2 ||
		die "ctr images import $1 failed"
}

# ---------------------------------------------------------------------------
# Status

node_status() {
	local owner c
	owner=$(node_owner)
	if [[ -z $owner ]]; then
		printf '%-24s %s\n' "node" "none (scripts/dev-cluster up --node starts one)"
		return 0
	fi
	if [[ $owner != "$STATE" ]]; then
		printf '%-24s %s\n' "node" "started from another checkout: $owner"
		return 0
	fi
	for c in "${NODE_COMPONENTS[@]}"; do
		if is_ours "$c"; then
			printf '%-24s running  pid %s\n' "$c" "$(pid_of "$c")"
		else
			printf '%-24s stopped\n' "$c"
		fi
	done
	local ready
	ready=$(kubectl_admin get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null || true)
	printf '%-24s %s\n' "node" "$NODE_NAME, Ready=${ready:-unknown}, address $NODE_IP" \
		"pods" "$POD_CIDR on bridge $NODE_BRIDGE" "services" "$SERVICE_CIDR (kube-proxy, iptables)" \
		"containerd" "$CONTAINERD_SOCK (ctr --address … -n k8s.io images ls)"
}

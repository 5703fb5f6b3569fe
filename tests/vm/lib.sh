# Helpers of the VM scenarios (sourced by /init; busybox ash). Emulation
# makes every fork expensive: the helpers use shell builtins where they can.
# Results go under /results (tarred to the second disk at the end):
#   manifest            one line per container: name id pod_uid rel
#   expect              key value: what the workloads did
#   agent-<tag>.ndjson  the agent's stdout (one JSON Metric per line)
#   agent-<tag>.log     its stderr
#   kernel/<snap>/...   kernel files copied at a point in time

CG=/sys/fs/cgroup
# every hierarchy a container has a directory in (v1: one per controller)
HIERARCHIES=$CG

now() { read -r up _ </proc/uptime; echo "$up"; }
mark() { echo "@@$* uptime=$(now)"; }
fail() {
  echo "@@FAIL $*"
  echo "$*" >>/results/failures
}
expect() { echo "$1 $2" >>/results/expect; }

# containers: reads "name driver qos runtime pod" lines and makes every
# container's cgroup directories as the kubelet and the runtime name them
# (driver systemd or cgroupfs; runtime containerd, crio or docker), with
# ids derived from the line number. Records them in /results/manifest and
# sets REL_<name> (dashes as underscores) for run_in and the scenario.
# Called once per scenario.
containers() {
  awk -v seed="${ID_SEED:-7}" '
    function hex(n,   s, i) {
      s = ""
      for (i = 0; i < n; i++) { x = (x * 1103515245 + 12345) % 2147483648; s = s sprintf("%x", int(x / 65536) % 16) }
      return s
    }
    BEGIN { x = seed }
    NF == 5 {
      name = $1; driver = $2; qos = $3; rt = $4; pod = $5
      if (!(pod in uid)) uid[pod] = hex(8) "-" hex(4) "-" hex(4) "-" hex(4) "-" hex(12)
      id = hex(64); u = uid[pod]
      if (driver == "systemd") {
        us = u; gsub("-", "_", us)
        scope = (rt == "containerd" ? "cri-containerd-" : rt "-") id ".scope"
        if (qos == "guaranteed") rel = "kubepods.slice/kubepods-pod" us ".slice/" scope
        else rel = "kubepods.slice/kubepods-" qos ".slice/kubepods-" qos "-pod" us ".slice/" scope
      } else if (qos == "guaranteed") rel = "kubepods/pod" u "/" id
      else rel = "kubepods/" qos "/pod" u "/" id
      print name, id, u, rel >> "/results/manifest"
      v = name; gsub("-", "_", v)
      print "REL_" v "=" rel > "/tmp/rels"
      print rel > "/tmp/dirs"
    }' || fail "containers"
  . /tmp/rels
  for h in $HIERARCHIES; do
    while read -r rel; do
      if [ "$h" = "$CG" ] && [ -f $CG/cgroup.subtree_control ]; then
        v2_mkdir "$rel"
      else
        mkdir -p "$h/$rel"
      fi
    done </tmp/dirs
  done
}

# v2: each level made, and controllers enabled on it for its children (as
# systemd and the kubelet do), in one mkdir per level
v2_mkdir() {
  p=$CG
  IFS=/
  set -- $1
  unset IFS
  for part; do
    echo "+cpu +memory +io +pids" >"$p/cgroup.subtree_control" 2>/dev/null
    p=$p/$part
    [ -d "$p" ] || mkdir "$p"
  done
}

# run_in NAME CMD...: runs CMD inside container NAME's cgroups, in the
# background ($! is its pid)
run_in() {
  v=$1
  v=${v//-/_}
  eval "r=\$REL_$v"
  run_in_rel "$r" "$@"
}
run_in_rel() {
  dirs=
  for h in $HIERARCHIES; do dirs="$dirs $h/$1"; done
  shift 2
  sh -c 'for d in $0; do echo $$ >"$d/cgroup.procs"; done; exec "$@"' "$dirs" "$@" &
}

# run_wait NAME CMD...: the same, in the foreground
run_wait() {
  run_in "$@"
  wait $!
}

# cycles TAG: collection cycles the agent has written so far (one
# node.load.1 per cycle)
cycles() { grep -c '"node.load.1"' "/results/agent-$1.ndjson" 2>/dev/null; }

# wait_cycles TAG N [SECONDS]: until the agent has written N cycles
wait_cycles() {
  n=0 limit=$((${3:-120} * 4))
  while [ "$(cycles "$1")" -lt "$2" ]; do
    n=$((n + 1))
    if [ $n -gt $limit ]; then
      fail "agent $1: $2 cycles not written in ${3:-120}s"
      return 1
    fi
    usleep 250000
  done
}

# wait_log TAG TEXT [SECONDS]: until the agent's stderr has TEXT
wait_log() {
  n=0 limit=$((${3:-120} * 4))
  until grep -q "$2" "/results/agent-$1.log" 2>/dev/null; do
    n=$((n + 1))
    if [ $n -gt $limit ]; then
      fail "agent $1: no '$2' in its log in ${3:-120}s"
      return 1
    fi
    usleep 250000
  done
}

# copy a file with builtins only (no fork)
copy() {
  while IFS= read -r l || [ -n "$l" ]; do printf '%s\n' "$l"; done <"$1" >"$2"
}

# snap NAME FILES...: copies the named kernel files of every container,
# and the uptime, into kernel/NAME
snap() {
  s=/results/kernel/$1
  shift
  mkdir -p "$s"
  copy /proc/uptime "$s/uptime"
  while read -r name _ _ r; do
    mkdir "$s/$name"
    for h in $HIERARCHIES; do
      for f; do
        [ -f "$h/$r/$f" ] && copy "$h/$r/$f" "$s/$name/$f"
      done
    done
  done </results/manifest
}

# The test disk: vda (64 MiB); dm-0 a linear device on its second half.
setup_dm() {
  echo "0 65536 linear /dev/vda 65536" | dmsetup create stacked --noudevsync ||
    fail "dmsetup create"
  [ -b /dev/dm-0 ] || fail "no /dev/dm-0"
  copy /proc/devices /results/proc-devices
}

# start_agent TAG ARGS...: the agent in its own cgroup (not a container's),
# in the background; AGENT_PID_<tag> holds the pid
start_agent() {
  tag=$1
  shift
  for h in $HIERARCHIES; do mkdir -p "$h/agent-$tag"; done
  run_in_rel "agent-$tag" - cased-agent --sink stdout --node-name vm "$@" \
    >"/results/agent-$tag.ndjson" 2>"/results/agent-$tag.log"
  eval "AGENT_PID_$tag=$!"
}

stop_agent() {
  eval "pid=\$AGENT_PID_$1"
  kill -TERM "$pid" 2>/dev/null
  wait "$pid"
  echo "$?" >"/results/agent-$1.exit"
}

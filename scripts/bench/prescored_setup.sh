# Sourced by the pre-scored benchmarks (prescored_forms.sh, prescored_ab.sh): with $LOADTEST the load tester's
# path, makes a work directory (removed on exit), enters it, and writes the 8-camera 640x360 baseline b360.json and
# fw.toml (gRPC on 127.0.0.1:50951, HTTP on 127.0.0.1:19464). `cpu PID` prints a process's user + system ticks.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
"$LOADTEST" baseline --cameras 8 --frames 60 --width 640 --height 360 -o b360.json >/dev/null 2>&1
cat > fw.toml <<TOML
baseline = "$work/b360.json"
[server]
grpc_addr = "127.0.0.1:50951"
http_addr = "127.0.0.1:19464"
TOML
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
tck=$(getconf CLK_TCK)

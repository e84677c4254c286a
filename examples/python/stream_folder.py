"""Streams a folder of JPEG frames to framewatch as one camera, then prints that camera's slice summary.

    python generate_stubs.py                      # once: stubs/ from proto/framewatch/v1/*.proto
    python stream_folder.py --camera-id cam-7 path/to/frames/

Each *.jpg / *.jpeg under FOLDER (sorted by path) becomes one framewatch.v1.Frame on a single
IngestService.StreamFrames call, with the camera id, optional labels, a capture time and, with --predictions, the
model's detections. framewatch acknowledges every frame (accepted, or refused with a reason). The script then waits
until the drift evaluation has seen the frames (QueryService.ListSlices) and prints QueryService.GetSliceSummary
for the slice camera_id=<camera id>: its window and, per metric, the window mean against the baseline with PSI, KS
and the drift verdict. Exit code 0 when every frame was accepted, 1 when some were refused, 2 on a usage error.
"""

import argparse
import datetime
import json
import pathlib
import sys
import time
from collections import Counter

import grpc

HERE = pathlib.Path(__file__).resolve().parent


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folder", type=pathlib.Path, help="folder of JPEG frames (searched recursively)")
    p.add_argument("--server", default="127.0.0.1:50051", help="framewatch's gRPC address (default %(default)s)")
    p.add_argument("--camera-id", required=True, help="the camera these frames come from")
    p.add_argument("--label", action="append", default=[], metavar="KEY=VALUE", help="a slice label, e.g. site=lot-a")
    p.add_argument("--model-version", default="", help="version of the model that made --predictions")
    p.add_argument(
        "--start",
        help="capture time of the first frame (RFC 3339, e.g. 2026-11-26T10:00:00Z); the others follow at --fps. "
        "Default: each frame is stamped with the time it is sent",
    )
    p.add_argument("--fps", type=float, default=5.0, help="frames per second of the recording, with --start")
    p.add_argument(
        "--predictions",
        type=pathlib.Path,
        help='JSON lines {"path": ..., "detections": [{"x_min", "y_min", "x_max", "y_max", "class", "confidence"}]} '
        "(framewatch's offline format), matched by path relative to FOLDER or by file name",
    )
    p.add_argument("--token", help="bearer token (ingest and query roles) when the server has auth on")
    p.add_argument("--ca", type=pathlib.Path, help="CA certificate (PEM) when the server has TLS on")
    p.add_argument("--stubs", type=pathlib.Path, default=HERE / "stubs", help="where generate_stubs.py wrote them")
    p.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the evaluation to see the frames")
    return p.parse_args()


def load_stubs(path: pathlib.Path):
    if not (path / "framewatch" / "v1" / "ingest_pb2.py").is_file():
        sys.exit(f"no stubs under {path}: run python {HERE / 'generate_stubs.py'} {path}")
    sys.path.insert(0, str(path))
    from framewatch.v1 import frame_pb2, ingest_pb2_grpc, query_pb2, query_pb2_grpc

    return frame_pb2, ingest_pb2_grpc, query_pb2, query_pb2_grpc


def load_predictions(path: pathlib.Path | None) -> dict:
    """Detections by the path as written in the file and by file name."""
    found = {}
    if path is None:
        return found
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            key = str(entry["path"])
        except (ValueError, KeyError, TypeError) as e:
            sys.exit(f"{path}:{n}: not a predictions line ({e})")
        found[key] = entry.get("detections", [])
        found.setdefault(pathlib.PurePath(key).name, found[key])
    return found


def to_detection(frame_pb2, d: dict):
    return frame_pb2.Detection(
        x_min=d["x_min"],
        y_min=d["y_min"],
        x_max=d["x_max"],
        y_max=d["y_max"],
        class_label=str(d.get("class", "")),
        confidence=d.get("confidence", 0.0),
        class_probabilities=d.get("class_probabilities", []),
    )


def frames(args, frame_pb2, files, predictions):
    labels = dict(kv.split("=", 1) for kv in args.label)
    start = datetime.datetime.fromisoformat(args.start.replace("Z", "+00:00")) if args.start else None
    for i, f in enumerate(files):
        frame = frame_pb2.Frame(camera_id=args.camera_id, labels=labels, model_version=args.model_version)
        if start is None:
            frame.capture_time.GetCurrentTime()
        else:
            frame.capture_time.FromDatetime(start + datetime.timedelta(seconds=i / args.fps))
        frame.encoded_image = f.read_bytes()
        relative = f.relative_to(args.folder).as_posix()
        for d in predictions.get(relative, predictions.get(f.name, [])):
            frame.detections.append(to_detection(frame_pb2, d))
        yield frame


def channel(args) -> grpc.Channel:
    if args.ca:
        return grpc.secure_channel(args.server, grpc.ssl_channel_credentials(args.ca.read_bytes()))
    return grpc.insecure_channel(args.server)


def stamp(ts) -> str:
    return ts.ToDatetime(tzinfo=datetime.timezone.utc).isoformat(timespec="seconds") if ts.seconds else "-"


def print_summary(s) -> None:
    print(f"slice {s.slice}: {s.frames} frames in the window {stamp(s.window_start)} .. {stamp(s.window_end)}")
    reference = "its own reference" if s.baseline == "slice" else "the fleet-wide baseline"
    print(f"  evaluated at {stamp(s.evaluated_at)} against {reference}")
    print(f"  {'metric':<26} {'n':>6} {'mean':>10} {'baseline':>10} {'psi':>7} {'ks':>6}  drift")
    for m in sorted(s.metrics, key=lambda m: m.psi, reverse=True):
        mean = f"{m.mean:.4g}" if m.HasField("mean") else "-"
        drift = ("yes" if m.drift else "no") if m.HasField("drift") else "-"
        stats = f"{m.baseline_mean:>10.4g} {m.psi:>7.3f} {m.ks_statistic:>6.3f}"
        print(f"  {m.metric:<26} {m.n:>6} {mean:>10} {stats}  {drift}")
    for c in s.categoricals:
        drift = ("yes" if c.drift else "no") if c.HasField("drift") else "-"
        counts = ", ".join(f"{k} {v}" for k, v in sorted(c.counts.items()))
        print(f"  {c.name}: Cramer's V {c.cramers_v:.3f}, drift {drift} ({counts})")


def main() -> int:
    args = parse_args()
    if any("=" not in kv for kv in args.label):
        print("--label takes KEY=VALUE", file=sys.stderr)
        return 2
    frame_pb2, ingest_pb2_grpc, query_pb2, query_pb2_grpc = load_stubs(args.stubs)
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file())
    if not files:
        print(f"no JPEG files under {args.folder}", file=sys.stderr)
        return 2
    metadata = [("authorization", f"Bearer {args.token}")] if args.token else None
    with channel(args) as ch:
        ingest = ingest_pb2_grpc.IngestServiceStub(ch)
        refused = Counter()
        accepted = 0
        stream = frames(args, frame_pb2, files, load_predictions(args.predictions))
        for ack in ingest.StreamFrames(stream, metadata=metadata):
            if ack.accepted:
                accepted += 1
            else:
                refused[ack.reason] += 1
                name = files[ack.sequence].name if ack.sequence < len(files) else "?"
                print(f"frame {ack.sequence} ({name}) refused: {ack.reason}: {ack.message}", file=sys.stderr)
        reasons = ", ".join(f"{r} {n}" for r, n in refused.most_common())
        counts = f"{accepted} accepted, {sum(refused.values())} refused" + (f" ({reasons})" if reasons else "")
        print(f"sent {len(files)} frames from {args.folder}: {counts}")

        # The evaluation runs every few seconds: wait until it has counted what was accepted.
        query = query_pb2_grpc.QueryServiceStub(ch)
        key = f"camera_id={args.camera_id}"
        deadline = time.monotonic() + args.wait
        while True:
            listed = query.ListSlices(query_pb2.ListSlicesRequest(filter=key), metadata=metadata)
            seen = next((s for s in listed.slices if s.key == key), None)
            if seen is not None and seen.frames >= accepted:
                break
            if time.monotonic() > deadline:
                print(f"the evaluation has not counted the frames of {key} after {args.wait} s", file=sys.stderr)
                return 1
            time.sleep(0.5)
        print_summary(query.GetSliceSummary(query_pb2.GetSliceSummaryRequest(slice=key), metadata=metadata))
    return 0 if not refused else 1


if __name__ == "__main__":
    sys.exit(main())

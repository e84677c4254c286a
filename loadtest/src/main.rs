//! framewatch-loadtest: placeholder until the load-test issue; it only proves the crate links against the wire
//! types and the metric catalog it will drive.
fn main() {
    let names: Vec<&str> = framewatch_metrics::catalog().iter().map(|m| m.name).collect();
    let frame = framewatch_proto::v1::Frame::default();
    println!(
        "framewatch-loadtest is not implemented yet ({} catalog metrics known, frame type {:?} linked)",
        names.len(),
        frame.camera_id
    );
}

//! The harness itself: a fixture origin publishes a release and serves it.

use std::io::{Read as _, Write as _};

use ota_tests::{OriginFixture, test_image};

/// A plain HTTP/1.0 GET on loopback, returning the status line and the body.
fn get(base: &str, path: &str) -> (String, Vec<u8>) {
    let addr = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8_lossy(&response[..split]).to_string();
    let status = head.lines().next().unwrap().to_string();
    (status, response[split + 4..].to_vec())
}

#[test]
fn fixture_publishes_and_serves_a_release() {
    let temp = tempfile::tempdir().unwrap();
    let origin = OriginFixture::new(temp.path());
    let image = temp.path().join("system.img");
    std::fs::write(&image, test_image("harness", 1 << 20)).unwrap();
    origin.release("stable", 1, &[("system", &image)], &[]);
    origin.promote("stable", 1, &["--stable"]);
    let listed = origin.origin(&["release", "list", "--data", origin.data_str(), "--json"]);
    assert!(listed.contains("\"stable\""), "{listed}");

    let mut served = origin.serve();
    let http = served.http.clone().expect("an HTTP mirror");
    let (status, body) = get(&http, "/metadata/timestamp.json");
    assert!(status.contains("200"), "{status}");
    let timestamp: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(timestamp["signed"]["_type"], "timestamp");

    served.kill();
    assert!(
        std::net::TcpStream::connect(http.trim_start_matches("http://")).is_err(),
        "the killed server still answers"
    );
}

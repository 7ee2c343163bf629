//! The harness itself: a fixture origin publishes a release and serves it.

use ota_tests::{OriginFixture, http_get, metric, test_image};

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

    let mut served = origin.serve_with(&["--admin", "127.0.0.1:0"]);
    let http = served.http.clone().expect("an HTTP mirror");
    let (status, body) = http_get(&http, "/metadata/timestamp.json", &[]).unwrap();
    assert_eq!(status, 200);
    let timestamp: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(timestamp["signed"]["_type"], "timestamp");
    let admin = format!("http://{}", served.ready["admin"].as_str().unwrap());
    let (status, text) = http_get(&admin, "/metrics", &[]).unwrap();
    assert_eq!(status, 200);
    let text = String::from_utf8(text).unwrap();
    let served_metadata = metric(&text, "ota_origin_metadata_served_total");
    assert!(served_metadata >= Some(1.0), "{text}");

    served.kill();
    assert!(
        std::net::TcpStream::connect(http.trim_start_matches("http://")).is_err(),
        "the killed server still answers"
    );
}

//! The live demo (`simnet live`, the README's main job) end to end, small: real ota-sign
//! ceremony, origin, two site caches, four devices, a corrupting peer, a delta release.

use std::time::Duration;

use ota_tests::{Proc, bin};

#[test]
fn simnet_live_installs_the_signed_image_everywhere_and_bans_the_corrupting_peer() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("live.out");
    let mut command = std::process::Command::new(bin("simnet"));
    command
        .args(["live", "--sites", "2", "--devices", "2", "--image-mib", "4"])
        .arg("--dir")
        .arg(temp.path().join("run"))
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::process::Stdio::inherit());
    let mut live = Proc::spawn("simnet live", &mut command);
    let status = live.wait_for(Duration::from_secs(300));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(status.success(), "simnet live failed ({status}):\n{text}");
    assert!(
        text.contains("every device runs the signed image of release 2"),
        "{text}"
    );
    // The corrupting peer at site 1 was caught by the devices there, and named.
    let site1_bans = text
        .lines()
        .filter(|l| l.trim_start().starts_with("s1-d") && l.contains("should hash to"))
        .count();
    assert!(
        site1_bans >= 1,
        "no device at site 1 banned the corrupting peer:\n{text}"
    );
    // Nobody at site 2 talked to it.
    assert!(
        !text
            .lines()
            .any(|l| l.trim_start().starts_with("s2-d") && l.contains("should hash to")),
        "{text}"
    );
    // Each site's cache pulled each new chunk once: the origin sent about sites × new bytes,
    // for the full release and for the delta (which moves far less than the image).
    for title in ["release 1", "release 2 (delta)"] {
        let (egress, unique) = egress_line(&text, title);
        assert!(unique > 0.0, "{title}: no new bytes?\n{text}");
        assert!(
            egress <= 2.0 * unique * 1.05 + 0.05,
            "{title}: origin egress {egress} MiB for {unique} MiB new at 2 sites\n{text}"
        );
    }
    let (_, full) = egress_line(&text, "release 1");
    let (_, delta) = egress_line(&text, "release 2 (delta)");
    assert!(delta < full / 2.0, "delta {delta} MiB, full {full} MiB");
}

/// `TITLE: origin egress X MiB for Y MiB of new bytes` → (X, Y).
fn egress_line(text: &str, title: &str) -> (f64, f64) {
    let prefix = format!("{title}: origin egress ");
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no egress line for {title}:\n{text}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[0].parse().unwrap(), words[3].parse().unwrap())
}

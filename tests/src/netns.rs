//! Network namespaces, veth pairs and token-bucket shaping for the emulated-sites tests.
//!
//! Everything goes through the `ip` and `tc` programs (iproute2): a [`Netns`] is made with
//! `ip netns add` and deleted with `ip netns del` when dropped (also when the test panics);
//! programs run inside it with `ip netns exec`. Names carry the test process's id, so two runs
//! never collide, and namespaces a killed run left behind are removed by the next one.
//!
//! Not every machine allows namespaces (they need root, or CAP_SYS_ADMIN and CAP_NET_ADMIN):
//! [`usable`] tries one and says why it cannot, and the test skips saying so, or fails when
//! `OTA_REQUIRE_NETNS` is set.

use std::path::Path;
use std::process::{Command, Stdio};

/// The prefix of every namespace this module makes: `otaemu-PID-N-LABEL`.
const PREFIX: &str = "otaemu-";

/// Runs `program args` and returns its standard output, or an error naming the command and
/// carrying its standard error.
fn exec(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why network namespaces cannot be used here, or `None` when they can: `ip` and `tc` run, a
/// namespace can be made, and a token-bucket qdisc can be put on a veth inside it.
pub fn unavailable() -> Option<String> {
    if let Err(e) = exec("ip", &["-V"]) {
        return Some(format!("iproute2's `ip` does not run ({e})"));
    }
    if let Err(e) = exec("tc", &["-V"]) {
        return Some(format!("iproute2's `tc` does not run ({e})"));
    }
    remove_stale();
    let probe = match Netns::new("probe") {
        Ok(ns) => ns,
        Err(e) => return Some(format!("cannot make a network namespace: {e}")),
    };
    if let Err(e) = probe.ip(&["link", "add", "p0", "type", "veth", "peer", "name", "p1"]) {
        return Some(format!("cannot make a veth pair in a namespace: {e}"));
    }
    if let Err(e) = shape(&probe, "p0", 8_000_000) {
        return Some(format!("cannot shape a veth with tc tbf: {e}"));
    }
    None
}

/// Whether a test that needs namespaces should run. When they are unusable it prints, plainly,
/// that `test` is skipped and why, and returns `false`; with `OTA_REQUIRE_NETNS` set it panics
/// instead (so CI that promises namespaces cannot pass by skipping).
///
/// # Panics
/// When namespaces are unusable and `OTA_REQUIRE_NETNS` is set.
pub fn usable(test: &str) -> bool {
    let Some(why) = unavailable() else {
        return true;
    };
    assert!(
        std::env::var_os("OTA_REQUIRE_NETNS").is_none(),
        "{test}: OTA_REQUIRE_NETNS is set but network namespaces are unusable: {why}"
    );
    eprintln!(
        "SKIPPED {test}: network namespaces are unusable on this machine ({why}); \
         run as root with iproute2 installed, or set OTA_REQUIRE_NETNS=1 to fail instead"
    );
    false
}

/// Deletes namespaces `otaemu-PID-…` whose process is gone (left by a run that was killed).
fn remove_stale() {
    let Ok(list) = exec("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or("");
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            let _ = exec("ip", &["netns", "del", name]);
        }
    }
}

/// A network namespace, deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Makes the namespace `otaemu-PID-N-LABEL` with its loopback up.
    ///
    /// # Errors
    /// When `ip netns add` fails (with its message).
    pub fn new(label: &str) -> Result<Self, String> {
        // Tests of one binary run at once: a counter keeps their namespaces apart.
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{label}", std::process::id());
        exec("ip", &["netns", "add", &name])?;
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`.
    ///
    /// # Errors
    /// When it fails (with its message).
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        exec("ip", &[&["-n", &self.name][..], args].concat())
    }

    /// `tc ARGS` inside the namespace.
    ///
    /// # Errors
    /// When it fails (with its message).
    pub fn tc(&self, args: &[&str]) -> Result<String, String> {
        exec(
            "ip",
            &[&["netns", "exec", &self.name, "tc"][..], args].concat(),
        )
    }

    /// Sets a sysctl of this namespace (`sysctl -w KEY=VALUE` run inside it), e.g.
    /// `net.ipv4.ip_forward=1` for a namespace that routes between others.
    ///
    /// # Errors
    /// When it fails (with its message).
    pub fn sysctl(&self, setting: &str) -> Result<String, String> {
        exec(
            "ip",
            &["netns", "exec", &self.name, "sysctl", "-q", "-w", setting],
        )
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NAME PROGRAM`); add
    /// the program's arguments to it.
    pub fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = exec("ip", &["netns", "del", &self.name]) {
            eprintln!("cannot delete network namespace {}: {e}", self.name);
        }
    }
}

/// Joins `a` and `b` with a veth pair: `a_if` with address `a_cidr` in `a`, `b_if` with
/// `b_cidr` in `b`, both up. The pair is made inside the namespaces, so interface names only
/// need to be unique within each one, and it disappears with them.
///
/// # Errors
/// When `ip` fails.
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_cidr: &str,
    b: &Netns,
    b_if: &str,
    b_cidr: &str,
) -> Result<(), String> {
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])?;
    a.ip(&["addr", "add", a_cidr, "dev", a_if])?;
    b.ip(&["addr", "add", b_cidr, "dev", b_if])?;
    a.ip(&["link", "set", a_if, "up"])?;
    b.ip(&["link", "set", b_if, "up"])?;
    Ok(())
}

/// Limits what leaves `dev` in `ns` to `bits_per_sec` with a token bucket (`tc qdisc replace
/// … root tbf`): a 32 KiB bucket (a few full-size packets, so bursts stay short) and at most
/// 50 ms of queue, beyond which packets are dropped as a loaded link would.
///
/// # Errors
/// When `tc` fails.
pub fn shape(ns: &Netns, dev: &str, bits_per_sec: u64) -> Result<(), String> {
    let rate = format!("{bits_per_sec}bit");
    ns.tc(&[
        "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", "32kb", "latency",
        "50ms",
    ])?;
    Ok(())
}

/// Bytes and packets the root qdisc of `dev` in `ns` has sent (`tc -s qdisc show`): what
/// left through that interface, IP headers included.
///
/// # Errors
/// When `tc` fails or prints no counter.
pub fn sent(ns: &Netns, dev: &str) -> Result<(u64, u64), String> {
    let text = ns.tc(&["-s", "qdisc", "show", "dev", dev])?;
    let words: Vec<&str> = text.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "Sent")
        .ok_or_else(|| format!("no `Sent` counter in: {text}"))?;
    let number = |i: usize| -> Result<u64, String> {
        words
            .get(i)
            .and_then(|w| w.parse().ok())
            .ok_or_else(|| format!("unreadable counter in: {text}"))
    };
    Ok((number(at + 1)?, number(at + 3)?))
}

//! The peer's configuration: a TOML file (`ota-peer serve --config peer.toml`), with command
//! line flags taking precedence.
//!
//! ```toml
//! data = "/var/lib/ota-peer"
//! listen = "0.0.0.0:7443"
//! metrics = "127.0.0.1:9464"
//! origin = "203.0.113.7:7443"
//! origin_pin = "…64 hex…"
//! # Optional parents to fetch data from, in order of preference (default: the origin).
//! upstream = [{ addr = "10.0.0.2:7443", pin = "…" }]
//! capacity = 64_000_000_000        # bytes on disk
//! upstream_rate = 250_000          # bytes per second (a 2 Mbit/s uplink)
//! channels = ["stable"]            # prefetch these (empty: all)
//! prefetch_windows = ["22:00-06:00"]
//! director_root = "/etc/ota-peer/director-root.json"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ota_core::cache::Window;
use ota_net::quic::CertPin;
use serde::Deserialize;

use crate::upstream::UpstreamAddr;

/// An upstream in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamEntry {
    /// Address.
    pub addr: SocketAddr,
    /// Certificate pin (64 hex).
    pub pin: String,
}

/// The configuration file (every field optional; flags fill in or override).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data: Option<PathBuf>,
    /// QUIC listen address.
    pub listen: Option<SocketAddr>,
    /// Metrics/stats HTTP address.
    pub metrics: Option<SocketAddr>,
    /// The origin (relayed requests; data too unless `upstream` is set).
    pub origin: Option<SocketAddr>,
    /// The origin's pin.
    pub origin_pin: Option<String>,
    /// Parents to fetch data from, in order of preference.
    #[serde(default)]
    pub upstream: Vec<UpstreamEntry>,
    /// Bytes the cache may hold on disk.
    pub capacity: Option<u64>,
    /// Upstream budget, bytes per second.
    pub upstream_rate: Option<u64>,
    /// Upstream burst, bytes.
    pub upstream_burst: Option<u64>,
    /// Most upstream chunk fetches in flight.
    pub max_upstream_in_flight: Option<usize>,
    /// Channels to prefetch (empty: all).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Whether to prefetch.
    pub prefetch: Option<bool>,
    /// Seconds between polls of `timestamp.json`.
    pub poll_secs: Option<u64>,
    /// Prefetch windows, `HH:MM-HH:MM` UTC.
    #[serde(default)]
    pub prefetch_windows: Vec<String>,
    /// Seconds a mutable metadata file is served before it is refreshed.
    pub metadata_ttl_secs: Option<u64>,
    /// Bytes of recently used chunks kept in memory.
    pub hot_bytes: Option<u64>,
    /// Seconds a read or write with a device or an upstream may make no progress before it is
    /// given up (a device that does not read, an upstream that does not answer). Default 30.
    pub stall_timeout_secs: Option<u64>,
    /// Connections served at once.
    pub max_connections: Option<usize>,
    /// The director's root.json, to check offers before granting private content.
    pub director_root: Option<PathBuf>,
    /// TCP address of the libp2p discovery node (none: no discovery).
    pub discovery: Option<SocketAddr>,
    /// `site` (default) or `regional`: what the advertisement says this cache serves.
    pub discovery_role: Option<String>,
    /// Other discovery nodes to dial at start (TCP multiaddrs, e.g. a regional cache's).
    #[serde(default)]
    pub bootstrap: Vec<String>,
    /// Find and be found by mDNS on the LAN (default on).
    pub mdns: Option<bool>,
}

/// Discovery settings in force.
#[derive(Debug, Clone)]
pub struct DiscoverySettings {
    /// TCP listen address.
    pub listen: SocketAddr,
    /// What the cache serves.
    pub role: ota_net::discovery::Role,
    /// Bootstrap multiaddrs.
    pub bootstrap: Vec<ota_net::discovery::libp2p::Multiaddr>,
    /// mDNS on.
    pub mdns: bool,
}

/// The configuration in force.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory.
    pub data: PathBuf,
    /// QUIC listen address.
    pub listen: SocketAddr,
    /// Metrics/stats HTTP address.
    pub metrics: Option<SocketAddr>,
    /// The origin.
    pub origin: UpstreamAddr,
    /// Data upstreams, in order of preference.
    pub upstreams: Vec<UpstreamAddr>,
    /// Bytes on disk.
    pub capacity: u64,
    /// Upstream budget, bytes per second.
    pub upstream_rate: u64,
    /// Upstream burst, bytes.
    pub upstream_burst: u64,
    /// Most upstream fetches in flight.
    pub max_upstream_in_flight: usize,
    /// Channels to prefetch.
    pub channels: Vec<String>,
    /// Whether to prefetch.
    pub prefetch: bool,
    /// Poll interval.
    pub poll: Duration,
    /// Prefetch windows.
    pub prefetch_windows: Vec<Window>,
    /// Metadata TTL.
    pub metadata_ttl: Duration,
    /// Bytes in memory.
    pub hot_bytes: u64,
    /// No-progress bound on each read or write, with devices and upstreams.
    pub stall_timeout: Duration,
    /// Connections at once.
    pub max_connections: usize,
    /// The director root's bytes.
    pub director_root: Option<Vec<u8>>,
    /// Discovery, if on.
    pub discovery: Option<DiscoverySettings>,
}

/// Parses `HH:MM-HH:MM` (UTC) into a window.
pub fn parse_window(s: &str) -> Result<Window, String> {
    let seconds = |t: &str| -> Result<u32, String> {
        let (h, m) = t
            .trim()
            .split_once(':')
            .ok_or_else(|| format!("{t:?} is not HH:MM"))?;
        let (h, m): (u32, u32) = (
            h.parse().map_err(|_| format!("{t:?} is not HH:MM"))?,
            m.parse().map_err(|_| format!("{t:?} is not HH:MM"))?,
        );
        if h > 24 || m > 59 || (h == 24 && m > 0) {
            return Err(format!("{t:?} is not a time of day"));
        }
        Ok(h * 3600 + m * 60)
    };
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("window {s:?} is not HH:MM-HH:MM"))?;
    Ok(Window {
        start: seconds(a)?,
        end: seconds(b)?,
    })
}

/// Parses a certificate pin.
pub fn parse_pin(s: &str) -> Result<CertPin, String> {
    s.trim()
        .parse()
        .map_err(|e| format!("certificate pin {s:?}: {e}"))
}

impl Config {
    /// The configuration from a file merged under flags (`overrides`, same shape).
    pub fn resolve(file: FileConfig, overrides: FileConfig) -> Result<Self, String> {
        macro_rules! pick {
            ($f:ident) => {
                overrides.$f.clone().or(file.$f.clone())
            };
        }
        let data = pick!(data).ok_or("no data directory (--data or `data`)")?;
        let listen = pick!(listen).ok_or("no listen address (--listen or `listen`)")?;
        let origin_addr = pick!(origin).ok_or("no origin (--origin or `origin`)")?;
        let origin_pin = pick!(origin_pin).ok_or("no origin pin (--origin-pin or `origin_pin`)")?;
        let origin = UpstreamAddr {
            addr: origin_addr,
            pin: parse_pin(&origin_pin)?,
        };
        let entries = if overrides.upstream.is_empty() {
            &file.upstream
        } else {
            &overrides.upstream
        };
        let mut upstreams = entries
            .iter()
            .map(|u| {
                Ok(UpstreamAddr {
                    addr: u.addr,
                    pin: parse_pin(&u.pin)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        if upstreams.is_empty() {
            upstreams.push(origin);
        }
        let upstream_rate = pick!(upstream_rate).unwrap_or(u64::MAX / 4_000_000);
        if upstream_rate == 0 {
            return Err("upstream_rate must be above 0".into());
        }
        let channels = if overrides.channels.is_empty() {
            file.channels.clone()
        } else {
            overrides.channels.clone()
        };
        let windows = if overrides.prefetch_windows.is_empty() {
            &file.prefetch_windows
        } else {
            &overrides.prefetch_windows
        };
        let prefetch_windows = windows
            .iter()
            .map(|w| parse_window(w))
            .collect::<Result<Vec<_>, _>>()?;
        let director_root = pick!(director_root)
            .map(|p| std::fs::read(&p).map_err(|e| format!("reading {}: {e}", p.display())))
            .transpose()?;
        let bootstrap = if overrides.bootstrap.is_empty() {
            &file.bootstrap
        } else {
            &overrides.bootstrap
        };
        let discovery = match pick!(discovery) {
            None => None,
            Some(listen) => Some(DiscoverySettings {
                listen,
                role: match pick!(discovery_role).as_deref() {
                    None | Some("site") => ota_net::discovery::Role::SiteCache,
                    Some("regional") => ota_net::discovery::Role::RegionalCache,
                    Some(other) => {
                        return Err(format!("discovery role {other:?} is not site or regional"));
                    }
                },
                bootstrap: bootstrap
                    .iter()
                    .map(|a| {
                        a.parse()
                            .map_err(|e| format!("bootstrap address {a:?}: {e}"))
                    })
                    .collect::<Result<_, String>>()?,
                mdns: pick!(mdns).unwrap_or(true),
            }),
        };
        Ok(Self {
            discovery,
            data,
            listen,
            metrics: pick!(metrics),
            origin,
            upstreams,
            capacity: pick!(capacity).unwrap_or(16 << 30),
            upstream_rate,
            // One second of budget, at least one largest chunk.
            upstream_burst: pick!(upstream_burst).unwrap_or(upstream_rate.max(1 << 20)),
            max_upstream_in_flight: pick!(max_upstream_in_flight).unwrap_or(64).max(1),
            channels,
            prefetch: pick!(prefetch).unwrap_or(true),
            poll: Duration::from_secs(pick!(poll_secs).unwrap_or(30).max(1)),
            prefetch_windows,
            metadata_ttl: Duration::from_secs(pick!(metadata_ttl_secs).unwrap_or(5)),
            hot_bytes: pick!(hot_bytes).unwrap_or(64 << 20),
            stall_timeout: Duration::from_secs(pick!(stall_timeout_secs).unwrap_or(30).max(1)),
            max_connections: pick!(max_connections).unwrap_or(4096).max(1),
            director_root,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn windows_parse_and_refuse() {
        assert_eq!(
            parse_window("22:00-06:30").unwrap(),
            Window {
                start: 79_200,
                end: 23_400
            }
        );
        assert!(parse_window("25:00-01:00").is_err());
        assert!(parse_window("22:00").is_err());
    }

    #[test]
    fn file_and_flags_merge() {
        let pin = "ab".repeat(32);
        let file: FileConfig = toml::from_str(&format!(
            "data = \"/d\"\nlisten = \"127.0.0.1:1\"\norigin = \"127.0.0.1:2\"\norigin_pin = \"{pin}\"\nupstream_rate = 1000\nchannels = [\"stable\"]\n"
        ))
        .unwrap();
        let flags = FileConfig {
            upstream_rate: Some(2000),
            ..FileConfig::default()
        };
        let config = Config::resolve(file, flags).unwrap();
        assert_eq!(config.upstream_rate, 2000);
        assert_eq!(config.channels, ["stable"]);
        assert_eq!(config.upstreams, [config.origin]);
        assert!(toml::from_str::<FileConfig>("bogus = 1").is_err());
    }
}

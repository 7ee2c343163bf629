//! The two small messages discovery carries, and their bounded codecs.
//!
//! Both come from the network and are outside input: [`Advertisement::decode`] and
//! [`Announcement::decode`] check the length against a hard bound before they parse anything,
//! refuse trailing bytes, unknown versions and out-of-range fields, and never allocate more
//! than the bound. The encoding is postcard (as `enigm-ota/1`), with a version byte first.

use std::net::SocketAddr;

use ota_core::digest::Sha256Hash;
use ota_core::tuf::enigm::{Channel, ReleaseNumber};
use serde::{Deserialize, Serialize};

use crate::quic::CertPin;

/// The largest encoded [`Advertisement`] accepted or sent, in bytes.
pub const MAX_ADVERTISEMENT_LEN: usize = 512;

/// The largest encoded [`Announcement`] accepted or sent, in bytes.
pub const MAX_ANNOUNCEMENT_LEN: usize = 256;

/// The most QUIC addresses one advertisement may carry.
pub const MAX_QUIC_ADDRS: usize = 8;

/// The longest channel name an announcement may carry, in bytes.
pub const MAX_CHANNEL_LEN: usize = 64;

/// The version byte of both records.
const RECORD_VERSION: u8 = 1;

/// What a cache serves, so that a node can tell a parent from a sibling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Role {
    /// A site cache: serves the devices of one site (a ship, a factory).
    SiteCache,
    /// A regional cache: serves site caches (and devices) of a region; a site cache's parent.
    RegionalCache,
}

/// What a cache tells the nodes that ask: where its `enigm-ota/1` QUIC server listens and
/// which certificate it presents. Nothing in it is trusted (see the module doc of
/// [`crate::discovery`]): a client still pins the certificate in the QUIC handshake and
/// verifies every byte it receives through TUF.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Advertisement {
    /// The QUIC server's socket addresses, 1 to [`MAX_QUIC_ADDRS`]. An unspecified IP
    /// (`0.0.0.0` or `::`) means "the IP you reached my discovery node on": a node that
    /// receives such an address replaces the IP with the one its libp2p connection goes to.
    pub quic: Vec<SocketAddr>,
    /// The SHA-256 of the QUIC server's certificate: what the client pins.
    pub pin: CertPin,
    /// What the cache serves.
    pub role: Role,
}

/// A release announcement: a hint that `channel` has release `release`, published with
/// `timestamp.json` version `timestamp_version`. A cache that hears it fetches and verifies
/// `timestamp.json` from its upstream, as it would on a poll, and prefetches only what the
/// verified metadata names. A false announcement costs that one metadata fetch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Announcement {
    /// The release channel (1 to [`MAX_CHANNEL_LEN`] bytes, no control characters).
    pub channel: Channel,
    /// The release number on that channel.
    pub release: ReleaseNumber,
    /// The version of the `timestamp.json` that made the release visible.
    pub timestamp_version: u64,
}

/// A discovery record from the network was refused (the sender's fault).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The record is longer than its bound; nothing was parsed.
    #[error("record of {len} bytes is over the {max}-byte bound")]
    TooLong {
        /// The received length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The record is not the postcard encoding of the record type.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// Bytes follow a complete record.
    #[error("{0} bytes after the end of the record")]
    TrailingBytes(usize),
    /// The version byte is not one this node speaks.
    #[error("record version {0} is not supported (this node speaks version 1)")]
    UnsupportedVersion(u8),
    /// An advertisement with no QUIC address.
    #[error("advertisement has no QUIC address")]
    NoAddress,
    /// An advertisement with more than [`MAX_QUIC_ADDRS`] addresses.
    #[error("advertisement has {count} QUIC addresses, at most {max} are allowed")]
    TooManyAddresses {
        /// The number of addresses in the record.
        count: usize,
        /// The bound.
        max: usize,
    },
    /// An advertised QUIC address with port 0.
    #[error("advertised QUIC address {0} has port 0")]
    PortZero(SocketAddr),
    /// An announcement's channel is empty, too long or has control characters.
    #[error(
        "announcement channel name of {len} bytes is empty, over {max} bytes or has control characters"
    )]
    BadChannel {
        /// The length of the name in bytes.
        len: usize,
        /// The bound.
        max: usize,
    },
}

impl Advertisement {
    /// The wire encoding. Fails if this advertisement would be refused by [`Self::decode`]
    /// (our own configuration's fault: no address, too many, port 0).
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        self.check()?;
        let wire = AdvertisementWire {
            version: RECORD_VERSION,
            role: self.role,
            pin: *self.pin.0.as_bytes(),
            quic: self.quic.clone(),
        };
        encode_bounded(&wire, MAX_ADVERTISEMENT_LEN)
    }

    /// Parses an advertisement received from the network, bound first.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let wire: AdvertisementWire = decode_bounded(bytes, MAX_ADVERTISEMENT_LEN)?;
        if wire.version != RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion(wire.version));
        }
        let advertisement = Self {
            quic: wire.quic,
            pin: CertPin(Sha256Hash(wire.pin)),
            role: wire.role,
        };
        advertisement.check()?;
        Ok(advertisement)
    }

    fn check(&self) -> Result<(), RecordError> {
        if self.quic.is_empty() {
            return Err(RecordError::NoAddress);
        }
        if self.quic.len() > MAX_QUIC_ADDRS {
            return Err(RecordError::TooManyAddresses {
                count: self.quic.len(),
                max: MAX_QUIC_ADDRS,
            });
        }
        if let Some(addr) = self.quic.iter().find(|a| a.port() == 0) {
            return Err(RecordError::PortZero(*addr));
        }
        Ok(())
    }
}

impl Announcement {
    /// The wire encoding. Fails if the channel name would be refused by [`Self::decode`].
    pub fn encode(&self) -> Result<Vec<u8>, RecordError> {
        check_channel(&self.channel)?;
        let wire = AnnouncementWire {
            version: RECORD_VERSION,
            channel: self.channel.0.clone(),
            release: self.release.0,
            timestamp_version: self.timestamp_version,
        };
        encode_bounded(&wire, MAX_ANNOUNCEMENT_LEN)
    }

    /// Parses an announcement received from the network, bound first.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let wire: AnnouncementWire = decode_bounded(bytes, MAX_ANNOUNCEMENT_LEN)?;
        if wire.version != RECORD_VERSION {
            return Err(RecordError::UnsupportedVersion(wire.version));
        }
        let channel = Channel(wire.channel);
        check_channel(&channel)?;
        Ok(Self {
            channel,
            release: ReleaseNumber(wire.release),
            timestamp_version: wire.timestamp_version,
        })
    }
}

#[derive(Serialize, Deserialize)]
struct AdvertisementWire {
    version: u8,
    role: Role,
    pin: [u8; 32],
    quic: Vec<SocketAddr>,
}

#[derive(Serialize, Deserialize)]
struct AnnouncementWire {
    version: u8,
    channel: String,
    release: u64,
    timestamp_version: u64,
}

fn check_channel(channel: &Channel) -> Result<(), RecordError> {
    let name = &channel.0;
    if name.is_empty() || name.len() > MAX_CHANNEL_LEN || name.chars().any(char::is_control) {
        return Err(RecordError::BadChannel {
            len: name.len(),
            max: MAX_CHANNEL_LEN,
        });
    }
    Ok(())
}

fn encode_bounded<T: Serialize>(value: &T, max: usize) -> Result<Vec<u8>, RecordError> {
    let bytes = postcard::to_allocvec(value).map_err(|e| RecordError::Malformed(e.to_string()))?;
    if bytes.len() > max {
        return Err(RecordError::TooLong {
            len: bytes.len(),
            max,
        });
    }
    Ok(bytes)
}

/// Length first, then parse: a string or sequence inside cannot be longer than the input,
/// and the input is at most `max` bytes.
fn decode_bounded<'de, T: Deserialize<'de>>(
    bytes: &'de [u8],
    max: usize,
) -> Result<T, RecordError> {
    if bytes.len() > max {
        return Err(RecordError::TooLong {
            len: bytes.len(),
            max,
        });
    }
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| RecordError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(RecordError::TrailingBytes(rest.len()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use proptest::prelude::*;

    use super::*;

    fn advertisement(addrs: usize) -> Advertisement {
        Advertisement {
            quic: (0..addrs)
                .map(|i| SocketAddr::new(Ipv6Addr::LOCALHOST.into(), 4433 + i as u16))
                .collect(),
            pin: CertPin(Sha256Hash([7; 32])),
            role: Role::RegionalCache,
        }
    }

    #[test]
    fn advertisement_round_trips_up_to_the_address_bound() {
        for n in 1..=MAX_QUIC_ADDRS {
            let ad = advertisement(n);
            let bytes = ad.encode().unwrap();
            assert!(bytes.len() <= MAX_ADVERTISEMENT_LEN);
            assert_eq!(Advertisement::decode(&bytes).unwrap(), ad);
        }
    }

    #[test]
    fn advertisement_refusals_name_the_fault() {
        assert_eq!(advertisement(0).encode(), Err(RecordError::NoAddress));
        assert_eq!(
            advertisement(MAX_QUIC_ADDRS + 1).encode(),
            Err(RecordError::TooManyAddresses {
                count: MAX_QUIC_ADDRS + 1,
                max: MAX_QUIC_ADDRS
            })
        );
        // A sender that ignores the bound: the decoder refuses it all the same.
        let wire = AdvertisementWire {
            version: 1,
            role: Role::SiteCache,
            pin: [0; 32],
            quic: advertisement(MAX_QUIC_ADDRS + 1).quic,
        };
        let bytes = postcard::to_allocvec(&wire).unwrap();
        assert_eq!(
            Advertisement::decode(&bytes),
            Err(RecordError::TooManyAddresses {
                count: MAX_QUIC_ADDRS + 1,
                max: MAX_QUIC_ADDRS
            })
        );
        let zero = Advertisement {
            quic: vec![SocketAddr::new(Ipv4Addr::LOCALHOST.into(), 0)],
            ..advertisement(1)
        };
        assert!(matches!(zero.encode(), Err(RecordError::PortZero(_))));

        let mut bytes = advertisement(1).encode().unwrap();
        bytes[0] = 2;
        assert_eq!(
            Advertisement::decode(&bytes),
            Err(RecordError::UnsupportedVersion(2))
        );
        let mut bytes = advertisement(1).encode().unwrap();
        bytes.push(0);
        assert_eq!(
            Advertisement::decode(&bytes),
            Err(RecordError::TrailingBytes(1))
        );
        assert_eq!(
            Advertisement::decode(&[0; MAX_ADVERTISEMENT_LEN + 1]),
            Err(RecordError::TooLong {
                len: MAX_ADVERTISEMENT_LEN + 1,
                max: MAX_ADVERTISEMENT_LEN
            })
        );
        let bytes = advertisement(1).encode().unwrap();
        for cut in 0..bytes.len() {
            assert!(matches!(
                Advertisement::decode(&bytes[..cut]),
                Err(RecordError::Malformed(_))
            ));
        }
    }

    #[test]
    fn announcement_round_trips_and_refuses_bad_channels() {
        let a = Announcement {
            channel: Channel("x".repeat(MAX_CHANNEL_LEN)),
            release: ReleaseNumber(u64::MAX),
            timestamp_version: u64::MAX,
        };
        let bytes = a.encode().unwrap();
        assert!(bytes.len() <= MAX_ANNOUNCEMENT_LEN);
        assert_eq!(Announcement::decode(&bytes).unwrap(), a);

        for bad in [
            String::new(),
            "x".repeat(MAX_CHANNEL_LEN + 1),
            "a\nb".into(),
        ] {
            let len = bad.len();
            let wire = AnnouncementWire {
                version: 1,
                channel: bad.clone(),
                release: 1,
                timestamp_version: 1,
            };
            let bytes = postcard::to_allocvec(&wire).unwrap();
            let refusal = RecordError::BadChannel {
                len,
                max: MAX_CHANNEL_LEN,
            };
            assert_eq!(Announcement::decode(&bytes), Err(refusal.clone()));
            let a = Announcement {
                channel: Channel(bad),
                ..a.clone()
            };
            assert_eq!(a.encode(), Err(refusal));
        }
        // A length prefix that claims more than the input: refused, nothing allocated for it.
        let bytes = [1, 0xff, 0xff, 0xff, 0xff, 0x0f, b'a'];
        assert!(matches!(
            Announcement::decode(&bytes),
            Err(RecordError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Advertisement::decode(&bytes);
            let _ = Announcement::decode(&bytes);
        }

    }
}

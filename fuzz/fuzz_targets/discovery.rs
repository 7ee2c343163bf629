//! Discovery records (`ota_net::discovery::record`): any bytes, read as an advertisement and
//! as an announcement, end in a typed error or a record within every bound that survives a
//! round trip; never a panic, never an allocation beyond the record bounds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_net::discovery::{
    Advertisement, Announcement, MAX_ADVERTISEMENT_LEN, MAX_ANNOUNCEMENT_LEN, MAX_CHANNEL_LEN,
    MAX_QUIC_ADDRS,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(ad) = Advertisement::decode(data) {
        assert!(data.len() <= MAX_ADVERTISEMENT_LEN);
        assert!(!ad.quic.is_empty() && ad.quic.len() <= MAX_QUIC_ADDRS);
        let bytes = ad.encode().expect("a decoded advertisement re-encodes");
        assert_eq!(Advertisement::decode(&bytes), Ok(ad));
    }
    if let Ok(announcement) = Announcement::decode(data) {
        assert!(data.len() <= MAX_ANNOUNCEMENT_LEN);
        assert!(!announcement.channel.0.is_empty());
        assert!(announcement.channel.0.len() <= MAX_CHANNEL_LEN);
        let bytes = announcement
            .encode()
            .expect("a decoded announcement re-encodes");
        assert_eq!(Announcement::decode(&bytes), Ok(announcement));
    }
});

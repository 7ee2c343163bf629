//! Wire messages of `enigm-ota/1`: any bytes, read as a request frame and as a response
//! header frame through the bounded decoders, end in a typed error or a message that fits
//! every bound and survives a round trip; never a panic, and never an allocation beyond the
//! frame bounds whatever length a prefix claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ota_net::proto::{MAX_REQUEST_LEN, MAX_RESPONSE_HEADER_LEN, Request, Response};

fuzz_target!(|data: &[u8]| {
    if let Ok((request, used)) = Request::decode_frame(data) {
        assert!(used <= 4 + MAX_REQUEST_LEN as usize);
        let frame = request
            .encode_frame()
            .expect("a decoded request re-encodes");
        assert_eq!(Request::decode_frame(&frame).map(|(r, _)| r), Ok(request));
    }
    if let Ok((response, used)) = Response::decode_frame(data) {
        assert!(used <= 4 + MAX_RESPONSE_HEADER_LEN as usize);
        let frame = response
            .encode_frame()
            .expect("a decoded header re-encodes");
        assert_eq!(Response::decode_frame(&frame).map(|(r, _)| r), Ok(response));
    }
    // The message decoders without a prefix, as the server and client call them.
    let _ = Request::decode(data);
    let _ = Response::decode(data);
});

//! The first bytes the gateway reads of a Connect call: the `content-type`
//! that picks the protocol (`connect::protocol`), and the five-byte
//! envelopes of a streaming body (`connect::take_envelope`).
//!
//! The first input byte picks which. Envelopes are split off arbitrary
//! bytes until none is complete, and each split must be exact: the flags
//! byte, a message of exactly the declared length, taken from exactly the
//! right place, and an incomplete envelope left untouched. A content type
//! is classified as `connect.rs` documents: by its essence (before any
//! `;`), case-insensitively, and nothing without one is spoken.

#![no_main]

use bytes::Bytes;
use gateway::connect::{self, Codec, Kind, Protocol};
use http::{HeaderMap, HeaderValue, header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        envelopes(rest);
    } else {
        content_type(rest);
    }
});

fn envelopes(data: &[u8]) {
    let mut buffer = Bytes::copy_from_slice(data);
    let mut offset = 0;
    loop {
        let before = buffer.clone();
        match connect::take_envelope(&mut buffer) {
            Some((flags, message)) => {
                let declared =
                    u32::from_be_bytes([data[offset + 1], data[offset + 2], data[offset + 3], data[offset + 4]])
                        as usize;
                assert_eq!(flags, data[offset]);
                assert_eq!(message.len(), declared);
                assert_eq!(&message[..], &data[offset + 5..offset + 5 + declared]);
                assert_eq!(before.len(), 5 + declared + buffer.len());
                offset += 5 + declared;
                assert_eq!(&buffer[..], &data[offset..]);
            }
            None => {
                assert_eq!(buffer, before, "an incomplete envelope is left as it was");
                let remaining = &data[offset..];
                let complete = remaining.len() >= 5 && {
                    let declared =
                        u32::from_be_bytes([remaining[1], remaining[2], remaining[3], remaining[4]]);
                    remaining.len() - 5 >= declared as usize
                };
                assert!(!complete, "a complete envelope was not taken");
                break;
            }
        }
    }
}

fn content_type(data: &[u8]) {
    let mut headers = HeaderMap::new();
    let expected = match HeaderValue::from_bytes(data) {
        Ok(value) => {
            let expected = expected_protocol(&value);
            headers.insert(header::CONTENT_TYPE, value);
            expected
        }
        Err(_) => Protocol::Unsupported,
    };
    assert_eq!(connect::protocol(&headers), expected, "{data:?}");
}

/// The protocol of a content type, written from the module's contract.
fn expected_protocol(value: &HeaderValue) -> Protocol {
    let Ok(text) = value.to_str() else {
        return Protocol::Unsupported;
    };
    let essence = text.split(';').next().unwrap_or_default().trim();
    let is = |name: &str| essence.eq_ignore_ascii_case(name);
    if [
        "application/grpc",
        "application/grpc+proto",
        "application/grpc-web",
        "application/grpc-web+proto",
        "application/grpc-web-text",
        "application/grpc-web-text+proto",
    ]
    .into_iter()
    .any(is)
    {
        Protocol::Grpc
    } else if is("application/proto") {
        Protocol::Connect(Kind::Unary, Codec::Proto)
    } else if is("application/json") {
        Protocol::Connect(Kind::Unary, Codec::Json)
    } else if is("application/connect+proto") {
        Protocol::Connect(Kind::Stream, Codec::Proto)
    } else if is("application/connect+json") {
        Protocol::Connect(Kind::Stream, Codec::Json)
    } else {
        Protocol::Unsupported
    }
}

//! Properties of the gateway's parsers of a client's bytes (the same
//! functions the `fuzz/` targets drive, here in the normal test suite):
//! Connect envelopes and proto3 JSON. Any input gives an answer, never a
//! panic; what is valid round-trips.

use bytes::{BufMut, Bytes, BytesMut};
use gateway::connect::{json_to_proto, proto_to_json, take_envelope};
use proptest::prelude::*;
use prost_reflect::{DescriptorPool, MessageDescriptor};
use tonic::Code;

fn message(name: &str) -> MessageDescriptor {
    DescriptorPool::decode(todo_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set")
        .get_message_by_name(name)
        .expect("the message")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Envelopes are split whole or not at all, whatever the bytes.
    #[test]
    fn envelopes_are_taken_whole_or_not_at_all(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
        let mut buffer = Bytes::from(bytes.clone());
        match take_envelope(&mut buffer) {
            Some((flags, message)) => {
                prop_assert_eq!(flags, bytes[0]);
                prop_assert_eq!(5 + message.len() + buffer.len(), bytes.len());
                prop_assert_eq!(&message[..], &bytes[5..5 + message.len()]);
            }
            None => prop_assert_eq!(buffer.len(), bytes.len()),
        }
    }

    /// An enveloped message comes back as it went in, with what follows.
    #[test]
    fn an_envelope_round_trips(flags in any::<u8>(), message in proptest::collection::vec(any::<u8>(), 0..64), rest in proptest::collection::vec(any::<u8>(), 0..8)) {
        let mut framed = BytesMut::new();
        framed.put_u8(flags);
        framed.put_u32(u32::try_from(message.len()).unwrap());
        framed.put_slice(&message);
        framed.put_slice(&rest);
        let mut buffer = framed.freeze();
        let (got_flags, got) = take_envelope(&mut buffer).expect("a whole envelope");
        prop_assert_eq!(got_flags, flags);
        prop_assert_eq!(&got[..], &message[..]);
        prop_assert_eq!(&buffer[..], &rest[..]);
    }

    /// Any text as a CreateTaskRequest in JSON: protobuf, or
    /// INVALID_ARGUMENT quoting at most a short part of it.
    #[test]
    fn any_json_is_translated_or_refused(json in ".{0,200}") {
        let descriptor = message("tasks.v1.CreateTaskRequest");
        match json_to_proto(json.as_bytes(), descriptor.clone()) {
            Ok(proto) => {
                let back = proto_to_json(&proto, descriptor.clone()).expect("our own protobuf");
                let again = json_to_proto(&back, descriptor).expect("our own JSON");
                prop_assert_eq!(again, proto);
            }
            Err(status) => {
                prop_assert_eq!(status.code(), Code::InvalidArgument);
                prop_assert!(status.message().len() < 400, "{}", status.message());
            }
        }
    }

    /// Well-formed requests round-trip through JSON.
    #[test]
    fn a_create_request_round_trips(title in "[^\u{0}]{1,50}", priority in 0i32..4) {
        let descriptor = message("tasks.v1.CreateTaskRequest");
        let json = serde_json::json!({"title": title, "priority": priority}).to_string();
        let proto = json_to_proto(json.as_bytes(), descriptor.clone()).expect("valid JSON");
        let back: serde_json::Value =
            serde_json::from_slice(&proto_to_json(&proto, descriptor).expect("protobuf")).expect("JSON");
        prop_assert_eq!(back["title"].as_str(), Some(title.as_str()));
    }
}

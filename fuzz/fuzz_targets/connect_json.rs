//! The gateway's JSON translation (`connect::json_to_proto` and
//! `connect::proto_to_json`), with the message types of every method of
//! both public APIs, read from `todo_proto::FILE_DESCRIPTOR_SET` as the
//! gateway reads them.
//!
//! The first input byte picks the direction and the method; the rest is
//! the message.
//!
//! - Top bit clear: the rest is a client's JSON body for the method's
//!   input type. It is translated or refused with `INVALID_ARGUMENT`
//!   whose message quotes only a short prefix (echo is bounded). What is
//!   accepted must be a well-formed protobuf message of that type, and
//!   translating it back to JSON and in again must give the same message:
//!   the gateway can read every message it writes.
//! - Top bit set: the rest is an upstream's protobuf answer of the
//!   method's output type, translated to JSON or refused with `INTERNAL`;
//!   what comes out is valid JSON.

#![no_main]

use std::sync::LazyLock;

use gateway::connect::{json_to_proto, proto_to_json};
use libfuzzer_sys::fuzz_target;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tonic::Code;

/// Longest error message the gateway may build from a client's JSON: its
/// fixed words, the longest type name, and a quote of at most
/// `MAX_QUOTED_CHARS` characters, each escaped to at most 10.
const MAX_MESSAGE_CHARS: usize = 100 + 10 * serving::status::MAX_QUOTED_CHARS;

struct Methods {
    inputs: Vec<MessageDescriptor>,
    outputs: Vec<MessageDescriptor>,
}

static METHODS: LazyLock<Methods> = LazyLock::new(|| {
    let pool = DescriptorPool::decode(todo_proto::FILE_DESCRIPTOR_SET)
        .expect("the compiled-in descriptor set is valid");
    let mut methods: Vec<_> = serving::reflection::PUBLIC_SERVICES
        .iter()
        .map(|name| {
            pool.get_service_by_name(name)
                .expect("every public service is in the descriptor set")
        })
        .flat_map(|service| service.methods().collect::<Vec<_>>())
        .collect();
    methods.sort_by(|a, b| a.full_name().cmp(b.full_name()));
    Methods {
        inputs: methods.iter().map(|method| method.input()).collect(),
        outputs: methods.iter().map(|method| method.output()).collect(),
    }
});

fuzz_target!(|data: &[u8]| {
    let Some((&choice, message)) = data.split_first() else {
        return;
    };
    let pick = usize::from(choice & 0x7f);
    if choice & 0x80 == 0 {
        let inputs = &METHODS.inputs;
        from_json(message, &inputs[pick % inputs.len()]);
    } else {
        let outputs = &METHODS.outputs;
        to_json(message, &outputs[pick % outputs.len()]);
    }
});

fn from_json(json: &[u8], descriptor: &MessageDescriptor) {
    let proto = match json_to_proto(json, descriptor.clone()) {
        Ok(proto) => proto,
        Err(status) => {
            assert_eq!(status.code(), Code::InvalidArgument);
            assert!(
                status.message().chars().count() <= MAX_MESSAGE_CHARS,
                "an unbounded echo: {}",
                status.message()
            );
            return;
        }
    };
    let message = DynamicMessage::decode(descriptor.clone(), &proto[..])
        .expect("the gateway's own encoding decodes");
    let json_again = proto_to_json(&proto, descriptor.clone())
        .expect("an accepted message translates back to JSON");
    let proto_again = json_to_proto(&json_again, descriptor.clone()).unwrap_or_else(|status| {
        panic!(
            "the gateway's own JSON {} is refused: {status:?}",
            String::from_utf8_lossy(&json_again)
        )
    });
    let message_again = DynamicMessage::decode(descriptor.clone(), &proto_again[..])
        .expect("the gateway's own encoding decodes");
    assert_eq!(message, message_again);
}

fn to_json(proto: &[u8], descriptor: &MessageDescriptor) {
    match proto_to_json(proto, descriptor.clone()) {
        Ok(json) => {
            serde_json::from_slice::<serde_json::Value>(&json).expect("the gateway writes JSON");
        }
        Err(status) => assert_eq!(status.code(), Code::Internal),
    }
}

//! Messages the fast path does not turn into output but prost would still
//! decode, and so refuse when malformed: scopes, links, resources (decoded
//! by prost once checked), nested attribute values. Walked field by field
//! against their schema (the generated types' field numbers and kinds), so
//! a body the fast path takes is one prost takes.

use super::reader::{NotFast, Reader, Value};

/// prost refuses messages nested 100 deep; well short of that the fast
/// path leaves the body to prost, which decides.
pub const MAX_DEPTH: u32 = 64;

/// The messages walked here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Msg {
    AnyValue,
    ArrayValue,
    KeyValueList,
    KeyValue,
    Scope,
    Resource,
    EntityRef,
    Link,
}

/// What a known field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Varint,
    Fixed64,
    Fixed32,
    Bytes,
    Str,
    Msg(Msg),
}

/// The field `number` of `msg` (from opentelemetry-proto 0.33's types);
/// `None`: unknown, skipped.
fn kind(msg: Msg, number: u32) -> Option<Kind> {
    use Kind::{Bytes, Fixed32, Fixed64, Str, Varint};
    let m = Kind::Msg;
    Some(match (msg, number) {
        (Msg::AnyValue, 1) => Str,
        (Msg::AnyValue, 2 | 3 | 8) => Varint,
        (Msg::AnyValue, 4) => Fixed64,
        (Msg::AnyValue, 5) => m(Msg::ArrayValue),
        (Msg::AnyValue, 6) => m(Msg::KeyValueList),
        (Msg::AnyValue, 7) => Bytes,
        (Msg::ArrayValue, 1) => m(Msg::AnyValue),
        (Msg::KeyValueList, 1) => m(Msg::KeyValue),
        (Msg::KeyValue, 1) => Str,
        (Msg::KeyValue, 2) => m(Msg::AnyValue),
        (Msg::KeyValue, 3) => Varint,
        (Msg::Scope, 1 | 2) => Str,
        (Msg::Scope, 3) => m(Msg::KeyValue),
        (Msg::Scope, 4) => Varint,
        (Msg::Resource, 1) => m(Msg::KeyValue),
        (Msg::Resource, 2) => Varint,
        (Msg::Resource, 3) => m(Msg::EntityRef),
        (Msg::EntityRef, 1..=4) => Str,
        (Msg::Link, 1 | 2) => Bytes,
        (Msg::Link, 3) => Str,
        (Msg::Link, 4) => m(Msg::KeyValue),
        (Msg::Link, 5) => Varint,
        (Msg::Link, 6) => Fixed32,
        _ => return None,
    })
}

/// Whether `buf` is a `msg` prost decodes, at `depth` messages below the
/// request.
pub fn check(buf: &[u8], msg: Msg, depth: u32) -> Result<(), NotFast> {
    if depth > MAX_DEPTH {
        return Err(NotFast);
    }
    let mut r = Reader::new(buf);
    while let Some((number, v)) = r.next_field()? {
        let Some(k) = kind(msg, number) else {
            continue;
        };
        match (k, v) {
            (Kind::Varint, Value::Varint(_))
            | (Kind::Fixed64, Value::Fixed64(_))
            | (Kind::Fixed32, Value::Fixed32(_))
            | (Kind::Bytes, Value::Len(_)) => {}
            (Kind::Str, v) => {
                v.str()?;
            }
            (Kind::Msg(m), Value::Len(inner)) => check(inner, m, depth + 1)?,
            _ => return Err(NotFast),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
    };
    use prost::Message;

    fn nested(depth: usize) -> AnyValue {
        let mut v = AnyValue {
            value: Some(any_value::Value::IntValue(1)),
        };
        for _ in 0..depth {
            v = AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })),
            };
        }
        v
    }

    #[test]
    fn valid_messages_pass_and_bad_ones_do_not() {
        let scope = InstrumentationScope {
            name: "lib".into(),
            version: "1".into(),
            attributes: vec![KeyValue {
                key: "k".into(),
                value: Some(nested(3)),
                ..Default::default()
            }],
            dropped_attributes_count: 2,
        }
        .encode_to_vec();
        assert_eq!(check(&scope, Msg::Scope, 3), Ok(()));
        // the name as a varint: prost refuses the wire type
        assert_eq!(check(&[0x08, 0x01], Msg::Scope, 3), Err(NotFast));
        assert!(InstrumentationScope::decode(&[0x08, 0x01][..]).is_err());
        // invalid UTF-8 in a version
        assert_eq!(check(&[0x12, 0x01, 0xff], Msg::Scope, 3), Err(NotFast));
        assert!(InstrumentationScope::decode(&[0x12, 0x01, 0xff][..]).is_err());
        // an unknown field is skipped, as prost does
        assert_eq!(check(&[0x78, 0x05], Msg::Scope, 3), Ok(()));
    }

    #[test]
    fn deep_values_go_to_prost() {
        let ok = nested(20).encode_to_vec();
        assert_eq!(check(&ok, Msg::AnyValue, 5), Ok(()));
        let deep = nested(40).encode_to_vec();
        assert_eq!(check(&deep, Msg::AnyValue, 5), Err(NotFast));
    }
}

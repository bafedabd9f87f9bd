//! The written JSON against the dynamic path's, on random messages of every
//! ordermesh type, on odd but valid encodings, and on broken bytes.

use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, Value};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::routes::RouteTable;
use crate::transcode::dynamic_answer_json;

fn pool() -> DescriptorPool {
    crate::descriptors().clone()
}

fn ordermesh_messages() -> Vec<MessageDescriptor> {
    pool()
        .all_messages()
        .filter(|m| m.full_name().starts_with("ordermesh."))
        .collect()
}

/// What the dynamic path answers for `bytes`: its JSON, or `None` for an error.
fn dynamic(descriptor: &MessageDescriptor, bytes: &[u8]) -> Option<String> {
    dynamic_answer_json(descriptor.clone(), bytes).ok()
}

fn random_value(rng: &mut StdRng, field: &prost_reflect::FieldDescriptor, depth: usize) -> Value {
    match field.kind() {
        Kind::Double => Value::F64(
            *[
                0.0,
                -0.0,
                0.1,
                -2.5e300,
                1e-7,
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
            ]
            .get(rng.random_range(0..8))
            .unwrap_or(&1.0),
        ),
        Kind::Float => Value::F32(
            *[0.0, 0.1, -3.25, 1e30, f32::NAN, f32::NEG_INFINITY]
                .get(rng.random_range(0..6))
                .unwrap_or(&1.0),
        ),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(
            *[0, 1, -1, i32::MIN, i32::MAX, rng.random()]
                .get(rng.random_range(0..6))
                .unwrap_or(&7),
        ),
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => Value::I64(
            *[0, -1, i64::MIN, i64::MAX, rng.random()]
                .get(rng.random_range(0..5))
                .unwrap_or(&7),
        ),
        Kind::Uint32 | Kind::Fixed32 => Value::U32(rng.random()),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(rng.random()),
        Kind::Bool => Value::Bool(rng.random()),
        Kind::String => Value::String(
            [
                "",
                "sku-mug",
                "quote \" and back\\slash",
                "control \u{1}\n\t\u{7f}",
                "unicode ✓ 日本 \u{2028}",
                "</script><b>&amp;",
            ][rng.random_range(0..6)]
            .to_owned(),
        ),
        Kind::Bytes => {
            let len = rng.random_range(0..9);
            Value::Bytes(
                (0..len)
                    .map(|_| rng.random::<u8>())
                    .collect::<Vec<_>>()
                    .into(),
            )
        }
        Kind::Enum(enumeration) => {
            let values: Vec<i32> = enumeration.values().map(|v| v.number()).collect();
            if rng.random_range(0..5) == 0 {
                Value::EnumNumber(99)
            } else {
                Value::EnumNumber(values[rng.random_range(0..values.len())])
            }
        }
        Kind::Message(message) => Value::Message(random_message(rng, &message, depth + 1)),
    }
}

fn random_message(
    rng: &mut StdRng,
    descriptor: &MessageDescriptor,
    depth: usize,
) -> DynamicMessage {
    let mut message = DynamicMessage::new(descriptor.clone());
    if descriptor.full_name() == "google.protobuf.Timestamp" {
        let nanos = [
            0,
            5_000_000,
            123_456_000,
            rng.random_range(0..1_000_000_000),
        ];
        message.set_field_by_name(
            "seconds",
            Value::I64(rng.random_range(-62_135_596_800..253_402_300_799)),
        );
        message.set_field_by_name("nanos", Value::I32(nanos[rng.random_range(0..4)]));
        return message;
    }
    if descriptor.full_name() == "google.protobuf.Duration" {
        let seconds: i64 = rng.random_range(-100_000..100_000);
        let nanos = rng.random_range(0..1_000_000_000) * if seconds < 0 { -1 } else { 1 };
        message.set_field_by_name("seconds", Value::I64(seconds));
        message.set_field_by_name("nanos", Value::I32(nanos));
        return message;
    }
    for field in descriptor.fields() {
        if rng.random_range(0..3) == 0 || (depth > 3 && matches!(field.kind(), Kind::Message(_))) {
            continue;
        }
        let value = if field.is_list() {
            let count = rng.random_range(0..4);
            Value::List(
                (0..count)
                    .map(|_| random_value(rng, &field, depth))
                    .collect(),
            )
        } else {
            random_value(rng, &field, depth)
        };
        message.set_field(&field, value);
    }
    message
}

#[test]
fn every_route_answer_is_written_without_the_dynamic_path() {
    let table = RouteTable::from_pool(&pool(), |_| true).unwrap();
    let mut checked = 0;
    for route in table.routes() {
        let writer = ResponseWriter::new(&route.rpc.output());
        assert!(writer.covers_root(), "{}", route.label);
        for plan in &writer.plans {
            assert!(
                !matches!(plan, Plan::Unsupported),
                "{}: {plan:?}",
                route.label
            );
        }
        checked += 1;
    }
    assert!(checked >= 8, "only {checked} routes");
}

#[test]
fn random_messages_of_every_type_match_the_dynamic_path() {
    let mut rng = StdRng::seed_from_u64(24);
    let mut compared = 0;
    for descriptor in ordermesh_messages() {
        let writer = ResponseWriter::new(&descriptor);
        for _ in 0..200 {
            let bytes = random_message(&mut rng, &descriptor, 0).encode_to_vec();
            let expected = dynamic(&descriptor, &bytes).expect("a valid message renders");
            match writer.write(&bytes) {
                Ok(json) => assert_eq!(json, expected, "{}", descriptor.full_name()),
                Err(Fallback) => panic!("{} fell back on a valid message", descriptor.full_name()),
            }
            compared += 1;
        }
    }
    assert!(compared > 2_000, "{compared}");
}

/// A field's key on the wire.
fn key(number: u32, wire: u32) -> Vec<u8> {
    varint_bytes(u64::from(number << 3 | wire))
}

fn varint_bytes(mut value: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn delimited(number: u32, bytes: &[u8]) -> Vec<u8> {
    let mut out = key(number, 2);
    out.extend(varint_bytes(bytes.len() as u64));
    out.extend_from_slice(bytes);
    out
}

/// Asserts the written JSON is the dynamic path's, and returns it.
fn same(descriptor: &MessageDescriptor, bytes: &[u8]) -> String {
    let expected = dynamic(descriptor, bytes).expect("the dynamic path reads it");
    let written = ResponseWriter::new(descriptor)
        .write(bytes)
        .expect("written");
    assert_eq!(written, expected);
    written
}

fn field_number(descriptor: &MessageDescriptor, name: &str) -> u32 {
    descriptor.get_field_by_name(name).unwrap().number()
}

#[test]
fn odd_but_valid_encodings_read_as_the_dynamic_path_reads_them() {
    let pool = pool();
    let order = pool
        .get_message_by_name("ordermesh.order.v1.Order")
        .unwrap();
    let id = field_number(&order, "order_id");
    let total = field_number(&order, "total");
    let items = field_number(&order, "items");
    let money = pool
        .get_message_by_name("ordermesh.common.v1.Money")
        .unwrap();
    let units = field_number(&money, "minor_units");
    let currency = field_number(&money, "currency_code");

    let mut bytes = Vec::new();
    // A later singular value wins; fields out of number order.
    bytes.extend(delimited(id, b"first"));
    bytes.extend(delimited(items, &[]));
    bytes.extend(delimited(id, b"second"));
    // A singular message twice: the two merge.
    let mut part = key(units, 0);
    part.extend(varint_bytes(250));
    bytes.extend(delimited(total, &part));
    bytes.extend(delimited(total, &delimited(currency, b"EUR")));
    // Unknown fields of every wire type but groups are skipped.
    bytes.extend(key(900, 0));
    bytes.extend(varint_bytes(u64::MAX));
    bytes.extend(key(901, 1));
    bytes.extend([0; 8]);
    bytes.extend(delimited(902, b"ignored"));
    bytes.extend(key(903, 5));
    bytes.extend([0; 4]);
    // A non-minimal varint is still the number.
    bytes.extend(key(field_number(&order, "status"), 0));
    bytes.extend([0x82, 0x00]);
    let json = same(&order, &bytes);
    assert!(json.contains(r#""orderId":"second""#), "{json}");
    assert!(
        json.contains(r#""minorUnits":"250""#) && json.contains("EUR"),
        "{json}"
    );

    // Repeated numbers, packed and not, mixed in one message.
    let repeated = ordermesh_messages().into_iter().find_map(|message| {
        let field = message.fields().find(|f| {
            f.is_list() && matches!(f.kind(), Kind::Int32 | Kind::Int64 | Kind::Enum(_))
        })?;
        Some((message.clone(), field.number()))
    });
    if let Some((message, number)) = repeated {
        let mut bytes = key(number, 0);
        bytes.push(1);
        bytes.extend(delimited(number, &[2, 3, 0x96, 0x01]));
        bytes.extend(key(number, 0));
        bytes.push(4);
        same(&message, &bytes);
    }
}

#[test]
fn a_oneof_keeps_only_the_member_set_last() {
    let Some(message) = ordermesh_messages().into_iter().find(|m| {
        m.oneofs()
            .any(|o| !o.is_synthetic() && o.fields().len() >= 2)
    }) else {
        panic!("no oneof of two members to test with");
    };
    let oneof = message.oneofs().find(|o| !o.is_synthetic()).unwrap();
    let members: Vec<_> = oneof.fields().collect();
    let mut rng = StdRng::seed_from_u64(7);
    let encode = |field: &prost_reflect::FieldDescriptor, rng: &mut StdRng| {
        let mut one = DynamicMessage::new(message.clone());
        one.set_field(field, random_value(rng, field, 3));
        one.encode_to_vec()
    };
    for _ in 0..50 {
        // A, then B, then A again: B's value is gone, A's second stands alone.
        let mut bytes = encode(&members[0], &mut rng);
        bytes.extend(encode(&members[1], &mut rng));
        bytes.extend(encode(&members[0], &mut rng));
        same(&message, &bytes);
        let mut bytes = encode(&members[1], &mut rng);
        bytes.extend(encode(&members[0], &mut rng));
        same(&message, &bytes);
    }
}

#[test]
fn broken_bytes_are_never_written_differently() {
    let mut rng = StdRng::seed_from_u64(2024);
    let (mut written, mut fell_back) = (0, 0);
    for descriptor in ordermesh_messages() {
        let writer = ResponseWriter::new(&descriptor);
        for _ in 0..100 {
            let mut bytes = random_message(&mut rng, &descriptor, 0).encode_to_vec();
            match rng.random_range(0..4) {
                0 if !bytes.is_empty() => {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] ^= 1 << rng.random_range(0..8);
                }
                1 if !bytes.is_empty() => bytes.truncate(rng.random_range(0..bytes.len())),
                2 => {
                    let at = rng.random_range(0..=bytes.len());
                    bytes.insert(at, rng.random());
                }
                _ => {
                    let at = rng.random_range(0..=bytes.len());
                    bytes.splice(at..at, [0xff; 10]);
                }
            }
            match writer.write(&bytes) {
                Ok(json) => {
                    let expected = dynamic(&descriptor, &bytes);
                    assert_eq!(
                        Some(&json),
                        expected.as_ref(),
                        "{}: {bytes:?}",
                        descriptor.full_name()
                    );
                    written += 1;
                }
                Err(Fallback) => fell_back += 1,
            }
        }
    }
    // Both outcomes are exercised: a mutation often still decodes.
    assert!(
        written > 100 && fell_back > 100,
        "written {written}, fell back {fell_back}"
    );
}

#[test]
fn what_it_does_not_cover_falls_back() {
    let pool = pool();
    let details = pool.get_message_by_name("google.rpc.ErrorInfo").unwrap();
    let writer = ResponseWriter::new(&details);
    assert!(!writer.covers_root(), "a map field is the dynamic path's");
    let any = pool.get_message_by_name("google.protobuf.Any").unwrap();
    assert!(!ResponseWriter::new(&any).covers_root());
    // A timestamp out of prost-reflect's range is its error to give.
    let timestamp = pool
        .get_message_by_name("google.protobuf.Timestamp")
        .unwrap();
    let mut bytes = key(1, 0);
    bytes.extend(varint_bytes(i64::MAX as u64));
    assert!(ResponseWriter::new(&timestamp).write(&bytes).is_err());
    assert!(dynamic(&timestamp, &bytes).is_none());
}

#[test]
fn timestamps_are_written_as_prost_types_prints_them() {
    let mut rng = StdRng::seed_from_u64(3339);
    let edges = [
        (MIN_TIMESTAMP_SECONDS, 0),
        (MAX_TIMESTAMP_SECONDS, 999_999_999),
        (0, 0),
        (-1, 1),
        (951_782_400, 1_000_000), // 2000-02-29
        (4_107_456_000, 1_000),   // 2100-02-28 + a day: not a leap year
        (1_764_633_600, 123_456_789),
    ];
    let random = (0..20_000).map(|_| {
        let nanos = [0, 7_000_000, 7_000, rng.random_range(0..1_000_000_000)];
        (
            rng.random_range(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS),
            nanos[rng.random_range(0..4)],
        )
    });
    for (seconds, nanos) in edges.into_iter().chain(random) {
        let mut out = Vec::new();
        rfc3339(seconds, nanos, &mut out);
        let expected = prost_types::Timestamp { seconds, nanos }.to_string();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            expected,
            "{seconds} {nanos}"
        );
    }
}

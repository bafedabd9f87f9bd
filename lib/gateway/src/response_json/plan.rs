//! The plans `ResponseWriter` follows: one per message type, built once
//! from the descriptors (recursive types included), saying for each field
//! its JSON key, how it travels on the wire and how it is written.

use std::collections::HashMap;
use std::sync::Arc;

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor, Syntax};

/// Every plan reachable from `descriptor`'s, its own first.
pub(super) fn plans(descriptor: &MessageDescriptor) -> Vec<Plan> {
    let mut builder = Builder::default();
    builder.plan(descriptor);
    builder.plans
}

#[derive(Debug)]
pub(super) enum Plan {
    Fields(Fields),
    Timestamp,
    Duration,
    /// Written by the dynamic path.
    Unsupported,
}

#[derive(Debug)]
pub(super) struct Fields {
    /// In field-number order, as prost-reflect prints them.
    pub(super) fields: Vec<Field>,
    pub(super) by_number: ByNumber,
    /// How many real (not synthetic) oneofs the message has.
    pub(super) oneofs: usize,
}

#[derive(Debug)]
pub(super) struct Field {
    /// `"jsonName":`, escaped once.
    pub(super) key: Box<str>,
    pub(super) kind: FieldKind,
    pub(super) repeated: bool,
    /// Printed only when set: message fields, oneof members, proto3 optional.
    pub(super) presence: bool,
    /// Its real oneof, by index among the message's.
    pub(super) oneof: Option<usize>,
}

#[derive(Debug)]
pub(super) enum FieldKind {
    Double,
    Float,
    Int32,
    Sint32,
    Sfixed32,
    Int64,
    Sint64,
    Sfixed64,
    Uint32,
    Fixed32,
    Uint64,
    Fixed64,
    Bool,
    String,
    Bytes,
    /// Value names by number, each already a JSON string.
    Enum(Arc<HashMap<i32, Box<str>>>),
    /// The plan of the field's message type.
    Message(usize),
}

/// A field's index by its number: a table for the small numbers messages
/// mostly use, a map for the rest.
#[derive(Debug, Default)]
pub(super) struct ByNumber {
    small: Vec<Option<usize>>,
    large: HashMap<u32, usize>,
}

/// Field numbers below this are found in the table.
const SMALL_FIELD_NUMBERS: u32 = 256;

impl ByNumber {
    pub(super) fn insert(&mut self, number: u32, index: usize) {
        if number < SMALL_FIELD_NUMBERS {
            let slot = number as usize;
            if self.small.len() <= slot {
                self.small.resize(slot + 1, None);
            }
            self.small[slot] = Some(index);
        } else {
            self.large.insert(number, index);
        }
    }

    pub(super) fn get(&self, number: u32) -> Option<usize> {
        if number < SMALL_FIELD_NUMBERS {
            self.small.get(number as usize).copied().flatten()
        } else {
            self.large.get(&number).copied()
        }
    }
}

/// How a field's values travel on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum WireType {
    Varint,
    Fixed64,
    Delimited,
    Fixed32,
}

impl FieldKind {
    pub(super) fn wire_type(&self) -> WireType {
        match self {
            FieldKind::Double | FieldKind::Fixed64 | FieldKind::Sfixed64 => WireType::Fixed64,
            FieldKind::Float | FieldKind::Fixed32 | FieldKind::Sfixed32 => WireType::Fixed32,
            FieldKind::String | FieldKind::Bytes | FieldKind::Message(_) => WireType::Delimited,
            _ => WireType::Varint,
        }
    }
}

/// Builds the plans, each message type once (recursive types included).
#[derive(Default)]
struct Builder {
    plans: Vec<Plan>,
    by_name: HashMap<String, usize>,
}

impl Builder {
    fn plan(&mut self, descriptor: &MessageDescriptor) -> usize {
        if let Some(&index) = self.by_name.get(descriptor.full_name()) {
            return index;
        }
        let index = self.plans.len();
        self.plans.push(Plan::Unsupported);
        self.by_name
            .insert(descriptor.full_name().to_owned(), index);
        self.plans[index] = match descriptor.full_name() {
            "google.protobuf.Timestamp" => Plan::Timestamp,
            "google.protobuf.Duration" => Plan::Duration,
            name if name.starts_with("google.protobuf.") => Plan::Unsupported,
            _ => self
                .fields(descriptor)
                .map_or(Plan::Unsupported, Plan::Fields),
        };
        index
    }

    fn fields(&mut self, descriptor: &MessageDescriptor) -> Option<Fields> {
        let plain = descriptor.parent_file().syntax() == Syntax::Proto3
            && descriptor.extension_ranges().len() == 0;
        if !plain {
            return None;
        }
        let oneofs: Vec<String> = descriptor
            .oneofs()
            .filter(|oneof| !oneof.is_synthetic())
            .map(|oneof| oneof.full_name().to_owned())
            .collect();
        let mut fields = Vec::new();
        let mut by_number = ByNumber::default();
        for field in descriptor.fields() {
            if field.is_map() || field.is_group() {
                return None;
            }
            let oneof = field
                .containing_oneof()
                .filter(|oneof| !oneof.is_synthetic())
                .and_then(|oneof| oneofs.iter().position(|name| name == oneof.full_name()));
            by_number.insert(field.number(), fields.len());
            fields.push(Field {
                key: format!("{}:", serde_json::to_string(field.json_name()).ok()?).into(),
                kind: self.kind(&field)?,
                repeated: field.is_list(),
                presence: field.supports_presence(),
                oneof,
            });
        }
        Some(Fields {
            fields,
            by_number,
            oneofs: oneofs.len(),
        })
    }

    /// The field's kind, `None` for one only the dynamic path writes.
    fn kind(&mut self, field: &FieldDescriptor) -> Option<FieldKind> {
        Some(match field.kind() {
            Kind::Double => FieldKind::Double,
            Kind::Float => FieldKind::Float,
            Kind::Int32 => FieldKind::Int32,
            Kind::Sint32 => FieldKind::Sint32,
            Kind::Sfixed32 => FieldKind::Sfixed32,
            Kind::Int64 => FieldKind::Int64,
            Kind::Sint64 => FieldKind::Sint64,
            Kind::Sfixed64 => FieldKind::Sfixed64,
            Kind::Uint32 => FieldKind::Uint32,
            Kind::Fixed32 => FieldKind::Fixed32,
            Kind::Uint64 => FieldKind::Uint64,
            Kind::Fixed64 => FieldKind::Fixed64,
            Kind::Bool => FieldKind::Bool,
            Kind::String => FieldKind::String,
            Kind::Bytes => FieldKind::Bytes,
            // Written as null, not by name.
            Kind::Enum(enumeration) if enumeration.full_name() == "google.protobuf.NullValue" => {
                return None;
            }
            Kind::Enum(enumeration) => {
                // The name prost-reflect picks for a number (aliases share one).
                let names = enumeration
                    .values()
                    .filter_map(|value| {
                        let canonical = enumeration.get_value(value.number())?;
                        let name = serde_json::to_string(canonical.name()).ok()?;
                        Some((value.number(), name.into_boxed_str()))
                    })
                    .collect();
                FieldKind::Enum(Arc::new(names))
            }
            Kind::Message(message) => FieldKind::Message(self.plan(&message)),
        })
    }
}

//! A unary answer's proto3 JSON written straight from its protobuf bytes,
//! by a plan built once per message type from the descriptors (so fronting
//! a new service stays configuration only). No `DynamicMessage` in between:
//! prost-reflect's decode into one and its serde walk were a quarter of the
//! gateway's instructions per get-order.
//!
//! The output is byte for byte what [`crate::transcode::to_json`] prints for
//! the decoded message. What a plan does not cover answers [`Fallback`] and
//! the caller takes the dynamic path, which then answers exactly as before, its
//! errors included: maps, proto2 and editions files, the well-known types
//! other than Timestamp and Duration, groups, and any encoding the dynamic
//! decoder might refuse (a bad varint, a wrong wire type, invalid UTF-8, a
//! timestamp out of range). A differential test and a fuzz target hold the
//! two paths to the same answer.
//!
//! The wire reading is written here rather than taken from prost: its
//! `encoding` module is public only for prost's own generated code.

mod plan;

use std::io::Write as _;

use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use prost::Message as _;
use prost_reflect::MessageDescriptor;

use self::plan::{FieldKind, Fields, Plan, WireType};

/// How deep messages may nest, as prost's decoder allows.
const RECURSION_LIMIT: usize = 100;

/// prost-reflect's bounds for the two well-known types written here.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
const MAX_DURATION_SECONDS: u64 = 315_576_000_000;
const MAX_DURATION_NANOS: u32 = 999_999_999;

/// The JSON writer of one message type and of every type it holds.
#[derive(Debug)]
pub struct ResponseWriter {
    /// The root type's plan first.
    plans: Vec<Plan>,
}

/// One value as read off the wire: a number (varint or fixed, as bits),
/// the bytes of a length-delimited one, or a string field's text (checked
/// as UTF-8 once, when read).
#[derive(Clone, Copy, Debug)]
enum Raw<'a> {
    Number(u64),
    Bytes(&'a [u8]),
    Text(&'a str),
}

/// A value of a field, in wire order (`seq`), for the oneof rule.
#[derive(Clone, Copy, Debug)]
struct Entry<'a> {
    field: usize,
    seq: usize,
    value: Raw<'a>,
}

/// Why the plan gave up: the dynamic path answers instead.
#[derive(Debug)]
pub struct Fallback;

type Written = Result<(), Fallback>;

impl ResponseWriter {
    /// The writer of `descriptor`'s JSON and of every message type it holds.
    pub fn new(descriptor: &MessageDescriptor) -> Self {
        Self {
            plans: plan::plans(descriptor),
        }
    }

    /// Whether the root type is written here at all (not only by fallback).
    pub fn covers_root(&self) -> bool {
        !matches!(self.plans.first(), Some(Plan::Unsupported) | None)
    }

    /// The JSON of the message encoded in `bytes`, or `Fallback` when the
    /// dynamic path must answer.
    pub fn write(&self, bytes: &[u8]) -> Result<String, Fallback> {
        let mut out = Vec::with_capacity(bytes.len() * 2 + 16);
        let whole = Entry {
            field: 0,
            seq: 0,
            value: Raw::Bytes(bytes),
        };
        self.message(0, std::slice::from_ref(&whole), &mut out, 0)?;
        // Every byte written is UTF-8: checked strings, ASCII around them.
        String::from_utf8(out).map_err(|_| Fallback)
    }

    /// Writes the message made of `parts`' bytes (several when a singular
    /// message field occurs more than once: they merge).
    fn message(
        &self,
        plan: usize,
        parts: &[Entry<'_>],
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Written {
        if depth >= RECURSION_LIMIT {
            return Err(Fallback);
        }
        match &self.plans[plan] {
            Plan::Fields(fields) => self.fields(fields, parts, out, depth),
            Plan::Timestamp => timestamp(parts, out),
            Plan::Duration => duration(parts, out),
            Plan::Unsupported => Err(Fallback),
        }
    }

    fn fields(
        &self,
        plan: &Fields,
        parts: &[Entry<'_>],
        out: &mut Vec<u8>,
        depth: usize,
    ) -> Written {
        let mut entries: Vec<Entry<'_>> = Vec::with_capacity(plan.fields.len());
        // Per real oneof: the member set last, and where its run began.
        let mut oneof_winner: Vec<Option<(usize, usize)>> = vec![None; plan.oneofs];
        for part in parts {
            read_fields(plan, bytes_of(part.value)?, &mut entries, &mut oneof_winner)?;
        }
        // Stable: each field's values keep their wire order.
        entries.sort_by_key(|entry| entry.field);
        out.push(b'{');
        let mut first = true;
        let mut rest = entries.as_slice();
        for (index, field) in plan.fields.iter().enumerate() {
            let run = rest.iter().take_while(|e| e.field == index).count();
            let (mut mine, later) = rest.split_at(run);
            rest = later;
            if let Some(oneof) = field.oneof {
                // Only the member set last counts, from where it was set.
                let cleared = match oneof_winner[oneof] {
                    Some((winner, start)) if winner == index => {
                        mine.partition_point(|e| e.seq < start)
                    }
                    _ => mine.len(),
                };
                // The dynamic decoder reads what is cleared too, and refuses
                // it if broken: so must this.
                if let (FieldKind::Message(nested), true) = (&field.kind, cleared > 0) {
                    let mut discarded = Vec::new();
                    self.message(*nested, &mine[..cleared], &mut discarded, depth + 1)?;
                }
                mine = &mine[cleared..];
            }
            if field.presence && mine.is_empty() {
                continue;
            }
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(field.key.as_bytes());
            if field.repeated {
                out.push(b'[');
                for (i, entry) in mine.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    match &field.kind {
                        FieldKind::Message(plan) => {
                            self.message(*plan, std::slice::from_ref(entry), out, depth + 1)?;
                        }
                        kind => scalar(kind, entry.value, out)?,
                    }
                }
                out.push(b']');
            } else if let FieldKind::Message(nested) = &field.kind {
                self.message(*nested, mine, out, depth + 1)?;
            } else {
                let value = mine.last().map_or(
                    match (&field.kind, field.kind.wire_type()) {
                        (FieldKind::String, _) => Raw::Text(""),
                        (_, WireType::Delimited) => Raw::Bytes(&[]),
                        _ => Raw::Number(0),
                    },
                    |entry| entry.value,
                );
                scalar(&field.kind, value, out)?;
            }
        }
        out.push(b'}');
        Ok(())
    }
}

fn bytes_of(value: Raw<'_>) -> Result<&[u8], Fallback> {
    match value {
        Raw::Bytes(bytes) => Ok(bytes),
        Raw::Number(_) | Raw::Text(_) => Err(Fallback),
    }
}

/// Reads every field of one encoded message into `entries`; unknown fields
/// are skipped, as the dynamic path's JSON leaves them out.
fn read_fields<'a>(
    plan: &Fields,
    mut bytes: &'a [u8],
    entries: &mut Vec<Entry<'a>>,
    oneof_winner: &mut [Option<(usize, usize)>],
) -> Written {
    while !bytes.is_empty() {
        let key = varint(&mut bytes)?;
        let key = u32::try_from(key).map_err(|_| Fallback)?;
        let (number, wire) = (key >> 3, key & 7);
        if number == 0 {
            return Err(Fallback);
        }
        let wire = match wire {
            0 => WireType::Varint,
            1 => WireType::Fixed64,
            2 => WireType::Delimited,
            5 => WireType::Fixed32,
            // Groups (3, 4) and the invalid 6 and 7.
            _ => return Err(Fallback),
        };
        let value = match wire {
            WireType::Varint => Raw::Number(varint(&mut bytes)?),
            WireType::Fixed64 => Raw::Number(u64::from_le_bytes(take(&mut bytes)?)),
            WireType::Fixed32 => Raw::Number(u64::from(u32::from_le_bytes(take(&mut bytes)?))),
            WireType::Delimited => {
                let len = usize::try_from(varint(&mut bytes)?).map_err(|_| Fallback)?;
                if len > bytes.len() {
                    return Err(Fallback);
                }
                let (value, rest) = bytes.split_at(len);
                bytes = rest;
                Raw::Bytes(value)
            }
        };
        let Some(index) = plan.by_number.get(number) else {
            continue;
        };
        let field = &plan.fields[index];
        let expected = field.kind.wire_type();
        let packed =
            field.repeated && wire == WireType::Delimited && expected != WireType::Delimited;
        if wire != expected && !packed {
            return Err(Fallback);
        }
        // Checked as read: a value a later one replaces must be UTF-8 too.
        let value = match (&field.kind, value) {
            (FieldKind::String, Raw::Bytes(text)) => {
                Raw::Text(std::str::from_utf8(text).map_err(|_| Fallback)?)
            }
            (_, value) => value,
        };
        let seq = entries.len();
        if let Some(oneof) = field.oneof {
            match oneof_winner[oneof] {
                Some((winner, _)) if winner == index => {}
                _ => oneof_winner[oneof] = Some((index, seq)),
            }
        }
        match (packed, value) {
            (true, Raw::Bytes(mut packed)) => {
                while !packed.is_empty() {
                    let value = match expected {
                        WireType::Varint => varint(&mut packed)?,
                        WireType::Fixed64 => u64::from_le_bytes(take(&mut packed)?),
                        _ => u64::from(u32::from_le_bytes(take(&mut packed)?)),
                    };
                    let seq = entries.len();
                    entries.push(Entry {
                        field: index,
                        seq,
                        value: Raw::Number(value),
                    });
                }
            }
            (_, value) => entries.push(Entry {
                field: index,
                seq,
                value,
            }),
        }
    }
    Ok(())
}

/// A base-128 varint of at most ten bytes, refused where prost refuses it.
fn varint(bytes: &mut &[u8]) -> Result<u64, Fallback> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate().take(10) {
        if i == 9 && byte > 1 {
            return Err(Fallback);
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            *bytes = &bytes[i + 1..];
            return Ok(value);
        }
    }
    Err(Fallback)
}

fn take<const N: usize>(bytes: &mut &[u8]) -> Result<[u8; N], Fallback> {
    let (head, rest) = bytes.split_first_chunk::<N>().ok_or(Fallback)?;
    *bytes = rest;
    Ok(*head)
}

/// One scalar value's JSON, as prost-reflect's serializer writes it.
fn scalar(kind: &FieldKind, value: Raw<'_>, out: &mut Vec<u8>) -> Written {
    let number = |value: Raw<'_>| match value {
        Raw::Number(n) => Ok(n),
        Raw::Bytes(_) | Raw::Text(_) => Err(Fallback),
    };
    // Writing to a Vec cannot fail: the results below are only formatting's.
    match kind {
        FieldKind::Double => float(f64::from_bits(number(value)?), out),
        FieldKind::Float => {
            let value = f32::from_bits(number(value)? as u32);
            if value.is_finite() {
                json(&value, out)?;
            } else {
                float(f64::from(value), out)?;
            }
            Ok(())
        }
        FieldKind::Int32 => json(&(number(value)? as i32), out),
        FieldKind::Sint32 => {
            let n = number(value)? as u32;
            json(&(((n >> 1) as i32) ^ -((n & 1) as i32)), out)
        }
        FieldKind::Sfixed32 => json(&(number(value)? as u32 as i32), out),
        FieldKind::Uint32 | FieldKind::Fixed32 => json(&(number(value)? as u32), out),
        FieldKind::Int64 | FieldKind::Sfixed64 => quoted(number(value)? as i64, out),
        FieldKind::Sint64 => {
            let n = number(value)?;
            quoted(((n >> 1) as i64) ^ -((n & 1) as i64), out)
        }
        FieldKind::Uint64 | FieldKind::Fixed64 => quoted(number(value)?, out),
        FieldKind::Bool => {
            out.extend_from_slice(if number(value)? != 0 {
                b"true"
            } else {
                b"false"
            });
            Ok(())
        }
        FieldKind::String => match value {
            Raw::Text(text) => json(text, out),
            Raw::Number(_) | Raw::Bytes(_) => Err(Fallback),
        },
        FieldKind::Bytes => {
            out.push(b'"');
            let start = out.len();
            let bytes = bytes_of(value)?;
            out.resize(
                start + base64::encoded_len(bytes.len(), true).ok_or(Fallback)?,
                0,
            );
            BASE64_STANDARD
                .encode_slice(bytes, &mut out[start..])
                .map_err(|_| Fallback)?;
            out.push(b'"');
            Ok(())
        }
        FieldKind::Enum(names) => {
            let number = number(value)? as i32;
            match names.get(&number) {
                Some(name) => out.extend_from_slice(name.as_bytes()),
                None => json(&number, out)?,
            }
            Ok(())
        }
        FieldKind::Message(_) => Err(Fallback),
    }
}

fn json<T: serde::Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Written {
    serde_json::to_writer(out, value).map_err(|_| Fallback)
}

/// A double, non-finite ones by name as proto3 JSON spells them.
fn float(value: f64, out: &mut Vec<u8>) -> Written {
    if value.is_finite() {
        return json(&value, out);
    }
    let name: &[u8] = if value.is_nan() {
        b"\"NaN\""
    } else if value > 0.0 {
        b"\"Infinity\""
    } else {
        b"\"-Infinity\""
    };
    out.extend_from_slice(name);
    Ok(())
}

/// A 64-bit integer as a JSON string.
fn quoted(value: impl std::fmt::Display, out: &mut Vec<u8>) -> Written {
    write!(out, "\"{value}\"").map_err(|_| Fallback)
}

fn timestamp(parts: &[Entry<'_>], out: &mut Vec<u8>) -> Written {
    let mut value = prost_types::Timestamp::default();
    for part in parts {
        value.merge(bytes_of(part.value)?).map_err(|_| Fallback)?;
    }
    let in_range = (MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&value.seconds);
    if !in_range || !(0..1_000_000_000).contains(&value.nanos) {
        return Err(Fallback);
    }
    out.push(b'"');
    rfc3339(value.seconds, value.nanos, out);
    out.push(b'"');
    Ok(())
}

/// A timestamp within years 1 to 9999 as prost-types prints it (UTC, `Z`,
/// no fraction or 3, 6 or 9 digits of one). Written by hand: the
/// formatter's padding was a quarter of an answer's JSON (callgrind).
fn rfc3339(seconds: i64, nanos: i32, out: &mut Vec<u8>) {
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days: days since 1970-01-01 to a date.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    digits(year, 4, out);
    out.push(b'-');
    digits(month, 2, out);
    out.push(b'-');
    digits(day, 2, out);
    out.push(b'T');
    digits(second_of_day / 3600, 2, out);
    out.push(b':');
    digits(second_of_day / 60 % 60, 2, out);
    out.push(b':');
    digits(second_of_day % 60, 2, out);
    let nanos = i64::from(nanos);
    if nanos != 0 {
        out.push(b'.');
        if nanos % 1_000_000 == 0 {
            digits(nanos / 1_000_000, 3, out);
        } else if nanos % 1_000 == 0 {
            digits(nanos / 1_000, 6, out);
        } else {
            digits(nanos, 9, out);
        }
    }
    out.push(b'Z');
}

/// `value` (not negative) in exactly `width` decimal digits.
fn digits(value: i64, width: u32, out: &mut Vec<u8>) {
    for place in (0..width).rev() {
        let digit = value / 10_i64.pow(place) % 10;
        out.push(b'0' + digit as u8);
    }
}

fn duration(parts: &[Entry<'_>], out: &mut Vec<u8>) -> Written {
    let mut value = prost_types::Duration::default();
    for part in parts {
        value.merge(bytes_of(part.value)?).map_err(|_| Fallback)?;
    }
    if value.seconds.unsigned_abs() > MAX_DURATION_SECONDS
        || value.nanos.unsigned_abs() > MAX_DURATION_NANOS
    {
        return Err(Fallback);
    }
    json(&value.to_string(), out)
}

#[cfg(test)]
mod tests;

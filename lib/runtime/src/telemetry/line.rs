//! One JSON log line's fields, merged and written out.
//!
//! Written by hand rather than through a `serde_json::Map`: building the
//! map parsed every enclosing span's fields into `Value`s, hashed each key
//! and serialised the lot again, 8.6 % of a CreateOrder saga's instructions
//! (callgrind) for about five lines per order. Here the spans' JSON stays
//! text: serde_json only splits each span's object into its keys and raw
//! values, and the line is written from those slices.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer as _;
use serde::de::{self, MapAccess, Visitor};
use serde_json::value::RawValue;
use tracing::field::{Field, Visit};

use super::{push_json_debug, push_json_string};

/// A line's fields in the order they are written. A key set again keeps its
/// place and takes the later value (inner spans over outer ones, the
/// event's own fields over its spans'), as a JSON map's insert would.
/// Values are JSON text; an empty value is a key reserved but never set
/// (`msg` of an event without a message), and is not written.
pub(super) struct LineFields<'a> {
    entries: Vec<(Cow<'a, str>, Cow<'a, str>)>,
}

impl<'a> LineFields<'a> {
    /// A line that starts with `keys`, each given its JSON value ("" to
    /// reserve a place for a key that may come later).
    pub(super) fn starting_with(keys: impl IntoIterator<Item = (&'a str, Cow<'a, str>)>) -> Self {
        let mut entries = Vec::with_capacity(16);
        entries.extend(
            keys.into_iter()
                .map(|(key, value)| (Cow::Borrowed(key), value)),
        );
        Self { entries }
    }

    pub(super) fn set(&mut self, key: Cow<'a, str>, value: Cow<'a, str>) {
        match self.entries.iter_mut().find(|(known, _)| *known == key) {
            Some(entry) => entry.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// Adds the fields of one span, as `SpanFieldsJson` wrote them (a JSON
    /// object). Text that is not one leaves the line as it was.
    pub(super) fn add_span_fields(&mut self, object: &'a str) {
        let mut parsed = Vec::new();
        let mut deserializer = serde_json::Deserializer::from_str(object);
        let complete = deserializer
            .deserialize_map(RawEntries(&mut parsed))
            .and_then(|()| deserializer.end());
        if complete.is_ok() {
            for (key, value) in parsed {
                self.set(key, Cow::Borrowed(value.get()));
            }
        }
    }

    /// The event's own fields; its `message` is written as `msg`.
    pub(super) fn add_event_fields(&mut self, event: &tracing::Event<'_>) {
        event.record(&mut EventFields(self));
    }

    /// The line as one JSON object, without its newline.
    pub(super) fn write(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let mut first = true;
        for (key, value) in &self.entries {
            if value.is_empty() {
                continue;
            }
            out.write_char(if first { '{' } else { ',' })?;
            first = false;
            push_json_string(out, key)?;
            out.write_char(':')?;
            out.write_str(value)?;
        }
        out.write_str(if first { "{}" } else { "}" })
    }
}

/// A JSON object's entries as keys and raw values, in order.
struct RawEntries<'l, 'de>(&'l mut Vec<(Cow<'de, str>, &'de RawValue)>);

impl<'de> Visitor<'de> for RawEntries<'_, 'de> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key()? {
            let value: &'de RawValue = map.next_value()?;
            self.0.push((key, value));
        }
        Ok(())
    }
}

/// A key, borrowed from the text unless it had escapes to undo.
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
                formatter.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, value: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(value)))
            }
            fn visit_str<E: de::Error>(self, value: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(value.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

/// Writes each of an event's fields as JSON text into the line.
struct EventFields<'l, 'a>(&'l mut LineFields<'a>);

impl EventFields<'_, '_> {
    fn set(&mut self, field: &Field, value: String) {
        let key = match field.name() {
            "message" => "msg",
            name => name,
        };
        self.0.set(Cow::Borrowed(key), Cow::Owned(value));
    }

    fn set_string(&mut self, field: &Field, value: &str) {
        let mut json = String::with_capacity(value.len() + 2);
        let _ = push_json_string(&mut json, value);
        self.set(field, json);
    }
}

impl Visit for EventFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.set_string(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.set(field, value.to_string());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.set(field, value.to_string());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.set(field, value.to_string());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json's own number format, and null for NaN and infinities.
        self.set(field, serde_json::to_string(&value).unwrap_or_default());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.set_string(field, &value.to_string());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let mut json = String::new();
        push_json_debug(&mut json, value);
        self.set(field, json);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_of(fields: &LineFields<'_>) -> String {
        let mut text = String::new();
        fields.write(&mut text).unwrap();
        text
    }

    #[test]
    fn a_key_set_again_keeps_its_place_and_takes_the_later_value() {
        let mut fields = LineFields::starting_with([
            ("ts", "\"t\"".into()),
            ("msg", "".into()),
            ("service", "\"ordermesh\"".into()),
        ]);
        fields.add_span_fields(r#"{"service":"order","trace_id":"ab","n":3}"#);
        fields.add_span_fields(r#"{"trace_id":"cd","quote":"say \"hi\"","ok":true}"#);
        assert_eq!(
            line_of(&fields),
            r#"{"ts":"t","service":"order","trace_id":"cd","n":3,"quote":"say \"hi\"","ok":true}"#
        );
    }

    #[test]
    fn span_text_that_is_not_one_object_adds_nothing() {
        let mut fields = LineFields::starting_with([("ts", "\"t\"".into())]);
        for broken in [r#"{"a":1"#, r#"{"a":1}{"b":2}"#, "[1]", "", r#"{"a":}"#] {
            fields.add_span_fields(broken);
        }
        assert_eq!(line_of(&fields), r#"{"ts":"t"}"#);
    }

    #[test]
    fn escaped_keys_are_unescaped_once_and_escaped_again_when_written() {
        let mut fields = LineFields::starting_with([]);
        fields.add_span_fields(r#"{"a\"b":1,"a\"b":2}"#);
        assert_eq!(line_of(&fields), r#"{"a\"b":2}"#);
        assert_eq!(line_of(&LineFields::starting_with([])), "{}");
    }
}

//! Resumable SSE for any server stream, from the descriptors alone: a
//! streamed message with a string field named `cursor` becomes an SSE event
//! with that `id:`, and a browser's (or curl's) `Last-Event-ID` fills the
//! request's own string `cursor` field when the query left it empty. The
//! rule is the field name, as `page_token` is for pages: any service that
//! names its resume point `cursor` gets it; nothing here knows which.

use prost_reflect::{DynamicMessage, Kind, ReflectMessage, Value};

/// The field the rule looks for, in requests and streamed messages alike.
pub const CURSOR: &str = "cursor";

/// Puts `last_event_id` into the request's `cursor` field if it has one of
/// type string and the caller did not set it.
pub fn resume(message: &mut DynamicMessage, last_event_id: Option<&str>) {
    let Some(id) = last_event_id.filter(|id| !id.is_empty()) else {
        return;
    };
    let Some(field) = message.descriptor().get_field_by_name(CURSOR) else {
        return;
    };
    if field.kind() != Kind::String || field.is_list() || message.has_field(&field) {
        return;
    }
    message.set_field(&field, Value::String(id.to_owned()));
}

/// The streamed message's cursor, if its type has one and it is set.
pub fn event_id(message: &DynamicMessage) -> Option<String> {
    let field = message.descriptor().get_field_by_name(CURSOR)?;
    match message.get_field(&field).as_ref() {
        Value::String(cursor) if !cursor.is_empty() => Some(cursor.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(name: &str) -> DynamicMessage {
        let pool = prost_reflect::DescriptorPool::decode(ordermesh_proto::FILE_DESCRIPTOR_SET)
            .expect("the descriptor set");
        DynamicMessage::new(pool.get_message_by_name(name).expect("a message"))
    }

    #[test]
    fn last_event_id_fills_an_empty_cursor_only() {
        let mut request = message("ordermesh.events.v1.WatchEventsRequest");
        resume(&mut request, Some("41"));
        assert_eq!(event_id(&request).as_deref(), Some("41"));
        resume(&mut request, Some("7"));
        assert_eq!(event_id(&request).as_deref(), Some("41"), "the query wins");

        let mut other = message("ordermesh.order.v1.WatchOrderRequest");
        resume(&mut other, Some("41"));
        assert_eq!(event_id(&other), None, "no cursor field, nothing set");
        assert!(!other.has_field_by_name("order_id"));
    }
}

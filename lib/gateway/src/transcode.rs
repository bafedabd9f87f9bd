//! JSON, path variables and query parameters into a request message; a
//! response message into JSON. prost-reflect does the proto3 JSON mapping
//! (lowerCamelCase out, both spellings in, int64 as strings, enums by name,
//! well-known types), so the bytes match what a grpc-gateway user sees.

use prost_reflect::{
    DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor, ReflectMessage,
    SerializeOptions, Value,
};

use crate::error::GatewayError;
use crate::routes::{BodyRule, Route};
use crate::template::{PathBindings, percent_decode};

/// Builds the request message of `route`.
pub fn request_message(
    route: &Route,
    bindings: PathBindings,
    query: Option<&str>,
    body: &[u8],
    content_type: Option<&str>,
    ignore_unknown_fields: bool,
) -> Result<DynamicMessage, GatewayError> {
    let input = route.rpc.input();
    let options = DeserializeOptions::new().deny_unknown_fields(!ignore_unknown_fields);
    let mut message = match &route.body {
        BodyRule::None => DynamicMessage::new(input.clone()),
        BodyRule::Whole => {
            check_json(body, content_type)?;
            parse_json(input.clone(), body, &options)?
        }
        BodyRule::Field(field) => {
            check_json(body, content_type)?;
            let mut message = DynamicMessage::new(input.clone());
            let value: serde_json::Value = serde_json::from_slice(body)
                .map_err(|e| GatewayError::BadRequest(format!("malformed JSON body: {e}")))?;
            let wrapped = serde_json::json!({ field.json_name(): value });
            let parsed = DynamicMessage::deserialize_with_options(input.clone(), wrapped, &options)
                .map_err(|e| GatewayError::BadRequest(format!("invalid request body: {e}")))?;
            message.set_field(field, parsed.get_field(field).into_owned());
            message
        }
    };
    for (path, text) in bindings {
        set_path(&mut message, &path, &text, "path variable")?;
    }
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        if matches!(route.body, BodyRule::Whole) {
            return Err(GatewayError::BadRequest(
                "query parameters are not accepted when the body holds the whole request".into(),
            ));
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_decode(&s.replace('+', " ")).ok_or_else(|| {
                    GatewayError::BadRequest(format!(
                        "query parameter {s:?} is not valid percent-encoding"
                    ))
                })
            };
            let key = decode(key)?;
            let value = decode(value)?;
            let path: Vec<String> = key.split('.').map(str::to_owned).collect();
            set_path(&mut message, &path, &value, "query parameter")?;
        }
    }
    Ok(message)
}

fn check_json(body: &[u8], content_type: Option<&str>) -> Result<(), GatewayError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(GatewayError::BadRequest(
            "a JSON request body is required".into(),
        ));
    }
    require_json(content_type)
}

/// Refuses a body not declared as JSON (`application/json`, any charset).
/// A missing type is refused too: `curl -d` and HTML forms send
/// form encoding, `fetch` sends text/plain, and all three are requests a
/// browser sends cross-site without a preflight; JSON is not.
pub fn require_json(content_type: Option<&str>) -> Result<(), GatewayError> {
    match content_type {
        Some(value)
            if value
                .split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json")) =>
        {
            Ok(())
        }
        Some(other) => Err(GatewayError::UnsupportedMediaType(other.to_owned())),
        None => Err(GatewayError::UnsupportedMediaType("none".to_owned())),
    }
}

/// Whether a request must declare a JSON body: any route that reads one,
/// and any method but GET, HEAD and DELETE (a POST that reads no body is
/// still not to be sent by a cross-site form).
pub fn needs_json(route: &Route, method: &http::Method) -> bool {
    !matches!(route.body, BodyRule::None)
        || !matches!(
            *method,
            http::Method::GET | http::Method::HEAD | http::Method::DELETE
        )
}

fn parse_json(
    descriptor: MessageDescriptor,
    body: &[u8],
    options: &DeserializeOptions,
) -> Result<DynamicMessage, GatewayError> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let message = DynamicMessage::deserialize_with_options(descriptor, &mut deserializer, options)
        .map_err(|e| GatewayError::BadRequest(format!("invalid request body: {e}")))?;
    deserializer
        .end()
        .map_err(|e| GatewayError::BadRequest(format!("invalid request body: {e}")))?;
    Ok(message)
}

/// A field by its proto name or its JSON (lowerCamelCase) name.
fn field_named(descriptor: &MessageDescriptor, name: &str) -> Option<FieldDescriptor> {
    descriptor
        .get_field_by_name(name)
        .or_else(|| descriptor.get_field_by_json_name(name))
}

/// Sets the (possibly nested) field at `path` from its text form; repeated
/// fields collect every value.
fn set_path(
    message: &mut DynamicMessage,
    path: &[String],
    text: &str,
    source: &str,
) -> Result<(), GatewayError> {
    let unknown = || GatewayError::BadRequest(format!("unknown {source} {:?}", path.join(".")));
    let (last, parents) = path.split_last().ok_or_else(unknown)?;
    let mut current = message;
    for name in parents {
        let field = field_named(&current.descriptor(), name).ok_or_else(unknown)?;
        if !matches!(field.kind(), Kind::Message(_)) || field.is_list() || field.is_map() {
            return Err(unknown());
        }
        current = current
            .get_field_mut(&field)
            .as_message_mut()
            .ok_or_else(unknown)?;
    }
    let field = field_named(&current.descriptor(), last).ok_or_else(unknown)?;
    let value = scalar(&field, text)
        .map_err(|why| GatewayError::BadRequest(format!("{source} {:?}: {why}", path.join("."))))?;
    if field.is_list() {
        if let Value::List(list) = current.get_field_mut(&field) {
            list.push(value);
        }
    } else {
        current.set_field(&field, value);
    }
    Ok(())
}

/// A scalar field's value from text.
fn scalar(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    let number = |kind: &str| format!("{text:?} is not a valid {kind}");
    Ok(match field.kind() {
        Kind::String => Value::String(text.to_owned()),
        Kind::Bool => Value::Bool(text.parse().map_err(|_| number("bool"))?),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            Value::I32(text.parse().map_err(|_| number("int32"))?)
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            Value::I64(text.parse().map_err(|_| number("int64"))?)
        }
        Kind::Uint32 | Kind::Fixed32 => Value::U32(text.parse().map_err(|_| number("uint32"))?),
        Kind::Uint64 | Kind::Fixed64 => Value::U64(text.parse().map_err(|_| number("uint64"))?),
        Kind::Float => Value::F32(text.parse().map_err(|_| number("float"))?),
        Kind::Double => Value::F64(text.parse().map_err(|_| number("double"))?),
        Kind::Bytes => return Err("bytes fields cannot be set from the URL".into()),
        Kind::Enum(enumeration) => {
            let value = enumeration
                .get_value_by_name(text)
                .map(|v| v.number())
                .or_else(|| {
                    text.parse::<i32>()
                        .ok()
                        .filter(|n| enumeration.get_value(*n).is_some())
                })
                .ok_or_else(|| format!("{text:?} is not a value of {}", enumeration.name()))?;
            Value::EnumNumber(value)
        }
        Kind::Message(_) => return Err("message fields cannot be set from the URL".into()),
    })
}

/// A unary answer's JSON through a `DynamicMessage` (what `response_json`
/// falls back to, and what it is held to).
pub fn dynamic_answer_json(
    descriptor: MessageDescriptor,
    answer: &[u8],
) -> Result<String, GatewayError> {
    let message =
        crate::codec::decode_answer(descriptor, answer).map_err(GatewayError::Upstream)?;
    to_json(&message)
}

/// The proto3 JSON of a message, fields in declaration order as protojson
/// (grpc-gateway) and Envoy's transcoder print them: written straight out,
/// since a `serde_json::Value` would sort the keys. Every field without
/// presence is printed, zeros and empty lists included (a sold-out product
/// says `"available": 0`), as grpc-gateway v2 does by default and Envoy with
/// `always_print_primitive_fields`; unset message fields are left out.
pub fn to_json(message: &DynamicMessage) -> Result<String, GatewayError> {
    let mut out = Vec::new();
    message
        .serialize_with_options(
            &mut serde_json::Serializer::new(&mut out),
            &SerializeOptions::new().skip_default_fields(false),
        )
        .map_err(|e| GatewayError::Internal(format!("cannot render a response as JSON: {e}")))?;
    String::from_utf8(out)
        .map_err(|e| GatewayError::Internal(format!("a response is not UTF-8 JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::RouteTable;
    use http::Method;
    use prost_reflect::DescriptorPool;

    fn table() -> RouteTable {
        RouteTable::from_pool(
            &DescriptorPool::decode(ordermesh_proto::FILE_DESCRIPTOR_SET).unwrap(),
            |_| true,
        )
        .unwrap()
    }

    fn build(
        method: Method,
        path: &str,
        query: Option<&str>,
        body: &str,
    ) -> Result<serde_json::Value, GatewayError> {
        let table = table();
        let (route, bindings) = table.find(&method, path).unwrap();
        let message = request_message(
            route,
            bindings,
            query,
            body.as_bytes(),
            Some("application/json"),
            false,
        )?;
        Ok(serde_json::from_str(&to_json(&message)?).unwrap())
    }

    #[test]
    fn bodies_accept_both_spellings() {
        let json = build(
            Method::POST,
            "/v1/orders",
            None,
            r#"{"customer_id":"c","items":[{"productId":"sku-mug","quantity":2}],"paymentMethod":"pm_card_visa"}"#,
        )
        .unwrap();
        assert_eq!(json["customerId"], "c");
        assert_eq!(json["items"][0]["quantity"], 2);
    }

    #[test]
    fn bad_bodies_name_the_problem() {
        let unknown = build(
            Method::POST,
            "/v1/orders",
            None,
            r#"{"customerId":"c","colour":"red"}"#,
        )
        .unwrap_err();
        assert!(unknown.to_string().contains("colour"), "{unknown}");
        let wrong_type =
            build(Method::POST, "/v1/orders", None, r#"{"items":"lots"}"#).unwrap_err();
        assert!(matches!(wrong_type, GatewayError::BadRequest(_)));
        let malformed = build(Method::POST, "/v1/orders", None, r#"{"customerId":"#).unwrap_err();
        assert!(matches!(malformed, GatewayError::BadRequest(_)));
        let missing = build(Method::POST, "/v1/orders", None, "").unwrap_err();
        assert!(missing.to_string().contains("required"), "{missing}");
        let trailing = build(Method::POST, "/v1/orders", None, "{} {}").unwrap_err();
        assert!(matches!(trailing, GatewayError::BadRequest(_)));
    }

    #[test]
    fn path_and_query_bind() {
        let json = build(
            Method::GET,
            "/v1/orders",
            Some("customerId=alice&page_size=5&pageToken=a%20b"),
            "",
        )
        .unwrap();
        assert_eq!(json["customerId"], "alice");
        assert_eq!(json["pageSize"], 5);
        assert_eq!(json["pageToken"], "a b");
        let json = build(
            Method::GET,
            "/v1/products",
            Some("productIds=a&productIds=b"),
            "",
        )
        .unwrap();
        assert_eq!(json["productIds"], serde_json::json!(["a", "b"]));
        let json = build(Method::POST, "/v1/orders/ord_9:cancel", None, "{}").unwrap();
        assert_eq!(json["orderId"], "ord_9");
        let unknown = build(Method::GET, "/v1/orders", Some("colour=red"), "").unwrap_err();
        assert!(unknown.to_string().contains("colour"), "{unknown}");
        let wrong = build(Method::GET, "/v1/orders", Some("pageSize=lots"), "").unwrap_err();
        assert!(wrong.to_string().contains("int32"), "{wrong}");
    }

    #[test]
    fn wrong_content_types_are_refused() {
        let table = table();
        let (route, bindings) = table.find(&Method::POST, "/v1/orders").unwrap();
        for refused in [
            Some("text/xml"),
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            None,
        ] {
            let error =
                request_message(route, bindings.clone(), None, b"{}", refused, false).unwrap_err();
            assert!(
                matches!(error, GatewayError::UnsupportedMediaType(_)),
                "{refused:?}"
            );
        }
        for accepted in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
        ] {
            require_json(Some(accepted)).unwrap();
        }
        assert!(needs_json(route, &Method::POST));
        let (get, _) = table.find(&Method::GET, "/v1/orders").unwrap();
        assert!(!needs_json(get, &Method::GET));
    }
}

//! An OpenAPI 3 document generated from the same descriptors and
//! annotations as the routes, so the two never disagree.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Value, json};

use crate::routes::{BodyRule, RouteTable};

const STATUS_SCHEMA: &str = "google.rpc.Status";
const BEARER_SCHEME: &str = "bearerAuth";

/// The document of `routes`; operations of `token_services` declare the
/// bearer scheme, so generated clients and fuzzers send a token.
pub fn document(routes: &RouteTable, token_services: &[String]) -> Value {
    let mut paths: BTreeMap<String, serde_json::Map<String, Value>> = BTreeMap::new();
    let mut messages = BTreeSet::new();
    for route in routes.routes() {
        let input = route.rpc.input();
        let output = route.rpc.output();
        let bound: BTreeSet<String> = route
            .template
            .variables()
            .map(|path| path.join("."))
            .collect();
        let mut parameters: Vec<Value> = route
            .template
            .variables()
            .map(|path| {
                let name = path.join(".");
                let schema =
                    field_at(&input, path).map_or(json!({"type": "string"}), |f| scalar_schema(&f));
                json!({"name": name, "in": "path", "required": true, "schema": schema})
            })
            .collect();
        if !matches!(route.body, BodyRule::Whole) {
            for field in input.fields() {
                let body_field =
                    matches!(&route.body, BodyRule::Field(f) if f.name() == field.name());
                if bound.contains(field.name())
                    || body_field
                    || matches!(field.kind(), Kind::Message(_))
                {
                    continue;
                }
                parameters.push(json!({
                    "name": field.json_name(),
                    "in": "query",
                    "required": false,
                    "schema": field_schema(&field, &mut messages),
                    "explode": true,
                }));
            }
        }
        let mut operation = json!({
            "operationId": operation_id(route),
            "summary": route.rpc.name(),
            "tags": [route.rpc.parent_service().name()],
            "parameters": parameters,
            "responses": {
                "default": {
                    "description": "An error, shaped like google.rpc.Status",
                    "content": {"application/json": {"schema": reference(STATUS_SCHEMA)}}
                }
            }
        });
        let success = if route.server_streaming() {
            messages.insert(output.full_name().to_owned());
            json!({
                "description": format!("Server-Sent Events: one `{}` (JSON) per event; an error arrives as a final `error` event", output.name()),
                "content": {"text/event-stream": {"schema": {"type": "string"}}}
            })
        } else {
            json!({
                "description": "OK",
                "content": {"application/json": {"schema": message_ref(&output, &mut messages)}}
            })
        };
        operation["responses"]["200"] = success;
        let links = links(routes, route);
        if !links.is_empty() {
            operation["responses"]["200"]["links"] = Value::Object(links);
        }
        if token_services.contains(&route.service) {
            operation["security"] = json!([{ BEARER_SCHEME: [] }]);
            operation["responses"]["401"] = json!({
                "description": "No valid bearer token (see the WWW-Authenticate header)",
                "content": {"application/json": {"schema": reference(STATUS_SCHEMA)}}
            });
        }
        let body_schema = match &route.body {
            BodyRule::Whole => Some(message_ref(&input, &mut messages)),
            BodyRule::Field(field) => Some(field_schema(field, &mut messages)),
            BodyRule::None => None,
        };
        if let Some(schema) = body_schema {
            operation["requestBody"] = json!({
                "required": true,
                "content": {"application/json": {"schema": schema}}
            });
        }
        paths
            .entry(route.template.openapi_path())
            .or_default()
            .insert(route.http_method.as_str().to_lowercase(), operation);
    }

    let mut schemas = serde_json::Map::new();
    let mut pending: Vec<String> = messages.iter().cloned().collect();
    let mut done = BTreeSet::new();
    let pool = routes
        .routes()
        .first()
        .map(|route| route.rpc.parent_pool().clone());
    while let Some(name) = pending.pop() {
        if !done.insert(name.clone()) {
            continue;
        }
        let Some(message) = pool
            .as_ref()
            .and_then(|pool| pool.get_message_by_name(&name))
        else {
            continue;
        };
        let mut found = BTreeSet::new();
        let properties: serde_json::Map<String, Value> = message
            .fields()
            .map(|field| {
                (
                    field.json_name().to_owned(),
                    field_schema(&field, &mut found),
                )
            })
            .collect();
        pending.extend(found.into_iter().filter(|n| !done.contains(n)));
        schemas.insert(
            name,
            json!({"type": "object", "properties": properties, "additionalProperties": false}),
        );
    }
    schemas.insert(
        STATUS_SCHEMA.to_owned(),
        json!({
            "type": "object",
            "properties": {
                "code": {"type": "integer", "format": "int32"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}}
            },
            "required": ["code", "message", "details"]
        }),
    );

    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "ordermesh",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "REST JSON for ordermesh, generated from the google.api.http annotations of its protos."
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                BEARER_SCHEME: {
                    "type": "http",
                    "scheme": "bearer",
                    "bearerFormat": "JWT",
                    "description": "A JWT of the shop's identity provider (or, in the one-command mode, from POST /v1/dev/token)"
                }
            }
        }
    })
}

/// OpenAPI links from a creating route (a POST with no path variable,
/// answering one message) to each route whose one path variable is a field
/// of that answer: `POST /v1/orders` to get, cancel and watch the order it
/// made. Stateful fuzzers (schemathesis) follow them.
fn links(routes: &RouteTable, from: &crate::routes::Route) -> serde_json::Map<String, Value> {
    let mut links = serde_json::Map::new();
    if from.http_method != http::Method::POST
        || from.template.variables().next().is_some()
        || from.server_streaming()
    {
        return links;
    }
    let output = from.rpc.output();
    for to in routes.routes() {
        let variables: Vec<Vec<String>> = to.template.variables().map(<[String]>::to_vec).collect();
        let [variable] = variables.as_slice() else {
            continue;
        };
        let [name] = variable.as_slice() else {
            continue;
        };
        let Some(field) = output.get_field_by_name(name) else {
            continue;
        };
        if field.is_list() || matches!(field.kind(), Kind::Message(_)) {
            continue;
        }
        links.insert(
            to.rpc.name().to_owned(),
            json!({
                "operationId": operation_id(to),
                "parameters": { name: format!("$response.body#/{}", field.json_name()) },
                "description": format!("The `{}` of this answer, to {}", field.json_name(), to.rpc.name()),
            }),
        );
    }
    links
}

fn operation_id(route: &crate::routes::Route) -> String {
    format!("{}_{}", route.rpc.parent_service().name(), route.rpc.name())
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn field_at(message: &MessageDescriptor, path: &[String]) -> Option<FieldDescriptor> {
    let (last, parents) = path.split_last()?;
    let mut current = message.clone();
    for name in parents {
        match current.get_field_by_name(name)?.kind() {
            Kind::Message(inner) => current = inner,
            _ => return None,
        }
    }
    current.get_field_by_name(last)
}

fn message_ref(message: &MessageDescriptor, found: &mut BTreeSet<String>) -> Value {
    match well_known(message) {
        Some(schema) => schema,
        None => {
            found.insert(message.full_name().to_owned());
            reference(message.full_name())
        }
    }
}

/// The JSON forms the proto3 mapping gives the well-known types.
fn well_known(message: &MessageDescriptor) -> Option<Value> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"})
        }
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.Empty" => json!({"type": "object", "additionalProperties": false}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.Int32Value" => json!({"type": "integer", "format": "int32"}),
        "google.protobuf.Int64Value" => json!({"type": "string", "format": "int64"}),
        _ => return None,
    })
}

fn scalar_schema(field: &FieldDescriptor) -> Value {
    match field.kind() {
        Kind::String => json!({"type": "string"}),
        Kind::Bool => json!({"type": "boolean"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => json!({"type": "integer", "format": "int64", "minimum": 0}),
        // int64 travels as a string in the proto3 JSON mapping.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => json!({"type": "string", "format": "int64"}),
        Kind::Uint64 | Kind::Fixed64 => json!({"type": "string", "format": "uint64"}),
        Kind::Float => json!({"type": "number", "format": "float"}),
        Kind::Double => json!({"type": "number", "format": "double"}),
        Kind::Bytes => json!({"type": "string", "format": "byte"}),
        Kind::Enum(enumeration) => json!({
            "type": "string",
            "enum": enumeration.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()
        }),
        Kind::Message(_) => json!({"type": "object"}),
    }
}

fn field_schema(field: &FieldDescriptor, found: &mut BTreeSet<String>) -> Value {
    let single = match field.kind() {
        Kind::Message(message) if field.is_map() => {
            let value = message.map_entry_value_field();
            return json!({"type": "object", "additionalProperties": field_schema(&value, found)});
        }
        Kind::Message(message) => message_ref(&message, found),
        _ => scalar_schema(field),
    };
    if field.is_list() {
        json!({"type": "array", "items": single})
    } else {
        single
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost_reflect::DescriptorPool;

    #[test]
    fn every_route_is_documented_with_its_schemas() {
        let pool = DescriptorPool::decode(ordermesh_proto::FILE_DESCRIPTOR_SET).unwrap();
        let routes = RouteTable::from_pool(&pool, |_| true).unwrap();
        let document = document(&routes, &["ordermesh.order.v1.OrderService".to_owned()]);
        for route in routes.routes() {
            let path = route.template.openapi_path();
            let method = route.http_method.as_str().to_lowercase();
            assert!(
                document["paths"][&path][&method].is_object(),
                "{method} {path}"
            );
        }
        let create = &document["paths"]["/v1/orders"]["post"];
        assert_eq!(
            create["requestBody"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ordermesh.order.v1.CreateOrderRequest"
        );
        let order = &document["components"]["schemas"]["ordermesh.order.v1.Order"];
        assert_eq!(order["properties"]["createTime"]["format"], "date-time");
        assert_eq!(
            order["properties"]["status"]["enum"][2],
            "ORDER_STATUS_CONFIRMED"
        );
        let money = &document["components"]["schemas"]["ordermesh.common.v1.Money"];
        assert_eq!(money["properties"]["minorUnits"]["type"], "string");
        let links = create["responses"]["200"]["links"].as_object().unwrap();
        let mut linked: Vec<&str> = links.keys().map(String::as_str).collect();
        linked.sort_unstable();
        assert_eq!(linked, ["CancelOrder", "GetOrder", "WatchOrder"]);
        assert_eq!(
            links["GetOrder"]["parameters"]["order_id"],
            "$response.body#/orderId"
        );
        assert_eq!(links["GetOrder"]["operationId"], "OrderService_GetOrder");
        let get = &document["paths"]["/v1/orders/{order_id}"]["get"];
        assert!(get["responses"]["200"].get("links").is_none());
        let list = &document["paths"]["/v1/orders"]["get"]["parameters"];
        assert!(
            list.as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "customerId")
        );
    }
}

//! `google.api.http` path templates: `/v1/orders/{order_id}:cancel`, and the
//! general grammar `{field.path=segments/*/**}`. axum's router knows neither
//! `:verb` suffixes nor variables bound to several segments, so templates are
//! parsed and matched here, as grpc-gateway and Envoy's transcoder do.

#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// One segment, `*`.
    Any,
    /// The rest of the path, `**`.
    Rest,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Variable {
    /// The request field the matched text goes into, e.g. ["order_id"].
    field_path: Vec<String>,
    /// The index of its first segment, and how many it covers (None: the rest).
    start: usize,
    len: Option<usize>,
}

/// Values bound from a path: the field path (`a.b.c`) split on dots, and the
/// decoded text that matched it.
pub type PathBindings = Vec<(Vec<String>, String)>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathTemplate {
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
    text: String,
}

impl PathTemplate {
    pub fn parse(text: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("path template {text:?}: {why}");
        let path = text
            .strip_prefix('/')
            .ok_or_else(|| bad("must start with '/'"))?;
        // A verb follows the last ':' outside braces.
        let (path, verb) = match path.rfind(':') {
            Some(colon) if !path[colon..].contains('}') => {
                (&path[..colon], Some(path[colon + 1..].to_owned()))
            }
            _ => (path, None),
        };
        let mut segments = Vec::new();
        let mut variables = Vec::new();
        let mut rest = path;
        while !rest.is_empty() {
            if let Some(inner) = rest.strip_prefix('{') {
                let close = inner.find('}').ok_or_else(|| bad("unclosed '{'"))?;
                let (field, pattern) = match inner[..close].split_once('=') {
                    Some((field, pattern)) => (field, pattern),
                    None => (&inner[..close], "*"),
                };
                if field.is_empty() || field.split('.').any(str::is_empty) {
                    return Err(bad("a variable needs a field path like `a.b`"));
                }
                let start = segments.len();
                for part in pattern.split('/') {
                    segments.push(literal_or_wildcard(part).ok_or_else(|| bad("empty segment"))?);
                }
                let len = (!matches!(segments.last(), Some(Segment::Rest)))
                    .then(|| segments.len() - start);
                variables.push(Variable {
                    field_path: field.split('.').map(str::to_owned).collect(),
                    start,
                    len,
                });
                let after = &inner[close + 1..];
                if !(after.is_empty() || after.starts_with('/')) {
                    return Err(bad("a variable must end its segment"));
                }
                rest = after.strip_prefix('/').unwrap_or(after);
            } else {
                let end = rest.find('/').unwrap_or(rest.len());
                segments
                    .push(literal_or_wildcard(&rest[..end]).ok_or_else(|| bad("empty segment"))?);
                rest = rest[end..].strip_prefix('/').unwrap_or("");
            }
        }
        // `**` takes the rest of the path, so nothing may follow it.
        if let Some(position) = segments.iter().position(|s| *s == Segment::Rest)
            && position + 1 != segments.len()
        {
            return Err(bad("`**` must be the last segment"));
        }
        Ok(Self {
            segments,
            variables,
            verb,
            text: text.to_owned(),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn has_verb(&self) -> bool {
        self.verb.is_some()
    }

    /// The template in OpenAPI form: `/v1/orders/{order_id}:cancel`.
    pub fn openapi_path(&self) -> String {
        let mut out = String::new();
        let mut index = 0;
        while index < self.segments.len() {
            out.push('/');
            if let Some(variable) = self.variables.iter().find(|v| v.start == index) {
                out.push_str(&format!("{{{}}}", variable.field_path.join(".")));
                index += variable.len.unwrap_or(self.segments.len() - index);
                continue;
            }
            match &self.segments[index] {
                Segment::Literal(literal) => out.push_str(literal),
                Segment::Any => out.push('*'),
                Segment::Rest => out.push_str("**"),
            }
            index += 1;
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        out
    }

    /// The field paths of the template's variables.
    pub fn variables(&self) -> impl Iterator<Item = &[String]> {
        self.variables.iter().map(|v| v.field_path.as_slice())
    }

    /// The variable bindings when `path` matches, percent-decoded.
    pub fn matches(&self, path: &str) -> Option<PathBindings> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let parts: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        let mut index = 0;
        for (position, segment) in self.segments.iter().enumerate() {
            match segment {
                Segment::Literal(literal) => {
                    if parts.get(index) != Some(&literal.as_str()) {
                        return None;
                    }
                    index += 1;
                }
                Segment::Any => {
                    if parts.get(index).is_none_or(|p| p.is_empty()) {
                        return None;
                    }
                    index += 1;
                }
                Segment::Rest => {
                    debug_assert_eq!(position, self.segments.len() - 1);
                    index = parts.len();
                }
            }
        }
        if index != parts.len() {
            return None;
        }
        self.variables
            .iter()
            .map(|variable| {
                let end = variable.len.map_or(parts.len(), |len| variable.start + len);
                let raw = parts.get(variable.start..end)?.join("/");
                let value = percent_decode(&raw)?;
                Some((variable.field_path.clone(), value))
            })
            .collect()
    }
}

fn literal_or_wildcard(part: &str) -> Option<Segment> {
    match part {
        "" => None,
        "*" => Some(Segment::Any),
        "**" => Some(Segment::Rest),
        literal => Some(Segment::Literal(literal.to_owned())),
    }
}

/// Decodes `%XX` escapes; None when the result is not UTF-8 or an escape is
/// malformed.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(template: &str, path: &str) -> Option<Vec<(String, String)>> {
        PathTemplate::parse(template)
            .unwrap()
            .matches(path)
            .map(|b| b.into_iter().map(|(f, v)| (f.join("."), v)).collect())
    }

    #[test]
    fn simple_variables_and_verbs() {
        assert_eq!(
            bind("/v1/orders/{order_id}", "/v1/orders/ord_1"),
            Some(vec![("order_id".into(), "ord_1".into())])
        );
        assert_eq!(
            bind("/v1/orders/{order_id}:cancel", "/v1/orders/ord_1:cancel"),
            Some(vec![("order_id".into(), "ord_1".into())])
        );
        assert_eq!(
            bind("/v1/orders/{order_id}:cancel", "/v1/orders/ord_1"),
            None
        );
        assert_eq!(
            bind("/v1/products:watch", "/v1/products:watch"),
            Some(vec![])
        );
        assert_eq!(
            bind("/v1/products/{product_id}", "/v1/products:watch"),
            None
        );
        assert_eq!(bind("/v1/orders", "/v1/orders/"), None);
        assert_eq!(bind("/v1/orders/{order_id}", "/v1/orders/"), None);
        assert_eq!(bind("/v1/orders/{order_id}", "/v1/orders/a/b"), None);
    }

    #[test]
    fn patterns_nested_fields_and_decoding() {
        assert_eq!(
            bind("/v1/{name=shelves/*/books/*}", "/v1/shelves/1/books/2"),
            Some(vec![("name".into(), "shelves/1/books/2".into())])
        );
        assert_eq!(
            bind("/v1/{book.name=**}", "/v1/a/b/c"),
            Some(vec![("book.name".into(), "a/b/c".into())])
        );
        assert_eq!(
            bind("/v1/orders/{order_id}", "/v1/orders/a%20b"),
            Some(vec![("order_id".into(), "a b".into())])
        );
        assert_eq!(bind("/v1/orders/{order_id}", "/v1/orders/%zz"), None);
    }

    #[test]
    fn openapi_paths() {
        let t = PathTemplate::parse("/v1/orders/{order_id}:cancel").unwrap();
        assert_eq!(t.openapi_path(), "/v1/orders/{order_id}:cancel");
        assert!(t.has_verb());
        assert!(PathTemplate::parse("v1/x").is_err());
        assert!(PathTemplate::parse("/v1/{x").is_err());
    }

    /// Found by `make fuzz`: a `**` that is not last once passed parsing and
    /// tripped an assertion when matching.
    #[test]
    fn malformed_templates_are_refused() {
        for bad in [
            "/v1/{path=**}A",
            "/v1/{path=**}/x",
            "/v1/**/x",
            "/v1/{}",
            "/v1/{a..b}",
            "/v1/{a}b",
        ] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad}");
        }
        assert!(PathTemplate::parse("/v1/{path=**}").is_ok());
    }
}

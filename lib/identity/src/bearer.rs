//! Reading the token out of `Authorization: Bearer <token>` (RFC 6750 §2.1).

use crate::error::AuthError;

/// The token in an `Authorization` header value: `None` for no header, the
/// bytes as they came otherwise (`HeaderValue::as_bytes` in axum,
/// `MetadataValue::as_bytes` in tonic). The scheme is case-insensitive.
pub fn parse_bearer(authorization: Option<&[u8]>) -> Result<&str, AuthError> {
    let value = authorization.ok_or(AuthError::Missing)?;
    let value = std::str::from_utf8(value).map_err(|_| AuthError::MalformedHeader)?;
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    let (scheme, token) = match value.split_once([' ', '\t']) {
        Some((scheme, rest)) => (scheme, rest.trim_start_matches([' ', '\t'])),
        None => (value, ""),
    };
    if scheme.is_empty() {
        return Err(AuthError::MalformedHeader);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::WrongScheme);
    }
    if !is_b64token(token) {
        return Err(AuthError::MalformedHeader);
    }
    Ok(token)
}

/// The token in the request's one `Authorization` header; two of them are
/// refused (RFC 6750 §3.1: one method of sending a token only).
pub fn bearer_from_headers(headers: &http::HeaderMap) -> Result<&str, AuthError> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(AuthError::MalformedHeader);
    }
    parse_bearer(first.map(http::HeaderValue::as_bytes))
}

/// RFC 6750's `b64token`: `1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="`.
fn is_b64token(token: &str) -> bool {
    let body = token.trim_end_matches('=');
    !body.is_empty()
        && body.bytes().all(|b| {
            matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'+' | b'/')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<&str, AuthError> {
        parse_bearer(Some(value.as_bytes()))
    }

    #[test]
    fn bearer_with_any_case() {
        assert_eq!(parse("Bearer x"), Ok("x"));
        assert_eq!(parse("bearer x"), Ok("x"));
        assert_eq!(parse("BEARER a.b.c"), Ok("a.b.c"));
        assert_eq!(parse("Bearer   a.b-_c  "), Ok("a.b-_c"));
    }

    #[test]
    fn missing_is_not_malformed() {
        assert_eq!(parse_bearer(None), Err(AuthError::Missing));
    }

    #[test]
    fn other_schemes() {
        assert_eq!(parse("Basic dXNlcjpwYXNz"), Err(AuthError::WrongScheme));
        assert_eq!(parse("Bearerx"), Err(AuthError::WrongScheme));
    }

    #[test]
    fn empty_and_broken() {
        assert_eq!(parse(""), Err(AuthError::MalformedHeader));
        assert_eq!(parse("   "), Err(AuthError::MalformedHeader));
        assert_eq!(parse("Bearer"), Err(AuthError::MalformedHeader));
        assert_eq!(parse("Bearer "), Err(AuthError::MalformedHeader));
        assert_eq!(parse("Bearer a b"), Err(AuthError::MalformedHeader));
        assert_eq!(parse("Bearer ===="), Err(AuthError::MalformedHeader));
        assert_eq!(parse("Bearer a\"b"), Err(AuthError::MalformedHeader));
        assert_eq!(
            parse_bearer(Some(b"Bearer \xff")),
            Err(AuthError::MalformedHeader)
        );
    }

    #[test]
    fn from_headers_refuses_two() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(bearer_from_headers(&headers), Err(AuthError::Missing));
        headers.append(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer one"),
        );
        assert_eq!(bearer_from_headers(&headers), Ok("one"));
        headers.append(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("Bearer two"),
        );
        assert_eq!(
            bearer_from_headers(&headers),
            Err(AuthError::MalformedHeader)
        );
    }
}

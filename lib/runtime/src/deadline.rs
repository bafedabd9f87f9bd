//! The caller's deadline, read from the incoming `grpc-timeout` header and
//! handed to every downstream call, so a chain of calls never outlives the
//! request that started it.

use std::time::{Duration, Instant};

use tonic::metadata::MetadataMap;

const GRPC_TIMEOUT_HEADER: &str = "grpc-timeout";

/// When the current request must be answered by, if the caller said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn after(timeout: Duration) -> Self {
        Self(Instant::now() + timeout)
    }

    /// The deadline the caller set with `grpc-timeout`, if any.
    pub fn from_metadata(metadata: &MetadataMap) -> Option<Self> {
        let value = metadata.get(GRPC_TIMEOUT_HEADER)?.to_str().ok()?;
        parse_grpc_timeout(value).map(Self::after)
    }

    /// The deadline a request's `grpc-timeout` header sets, if any.
    pub fn from_headers(headers: &http::HeaderMap) -> Option<Self> {
        let value = headers.get(GRPC_TIMEOUT_HEADER)?.to_str().ok()?;
        parse_grpc_timeout(value).map(Self::after)
    }

    /// Time left, zero once passed.
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// Sets the time left as the timeout of an outgoing request.
    pub fn apply<T>(self, request: &mut tonic::Request<T>) {
        request.set_timeout(self.remaining());
    }
}

/// Parses the gRPC wire format of a timeout: at most 8 digits and a unit
/// (H, M, S, m, u, n). tonic parses it privately, so this stays small here.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_unit() {
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(
            parse_grpc_timeout("1500m"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("10u"), Some(Duration::from_micros(10)));
        assert_eq!(parse_grpc_timeout("10n"), Some(Duration::from_nanos(10)));
    }

    #[test]
    fn rejects_malformed_values() {
        for bad in ["", "S", "10", "10x", "-1S", "123456789S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_the_header() {
        let mut metadata = MetadataMap::new();
        assert!(Deadline::from_metadata(&metadata).is_none());
        metadata.insert(GRPC_TIMEOUT_HEADER, "5S".parse().expect("valid header"));
        let deadline = Deadline::from_metadata(&metadata).expect("deadline");
        assert!(deadline.remaining() <= Duration::from_secs(5));
        assert!(deadline.remaining() > Duration::from_secs(4));
    }
}

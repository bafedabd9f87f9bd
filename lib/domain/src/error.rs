//! One description of a failure, the same for every service: what kind it
//! is (the gRPC code it travels as), the machine-readable reason programs
//! branch on, the facts a caller may need, whether trying again may succeed,
//! and the message a person can act on. Domain errors describe themselves
//! here, without knowing about gRPC or HTTP; the adapters read only this:
//! `ordermesh_runtime::status::to_status` builds the gRPC status, the
//! gateway's HTTP table maps the kind, and the saga reads its peers'
//! statuses back into descriptions.

/// The kinds of failure, one per gRPC status code (minus OK).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl ErrorKind {
    /// Whether a call that failed this way may still have taken effect, so
    /// a caller that must not leave it half done has to undo or retry it.
    pub fn outcome_unknown(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable
                | ErrorKind::DeadlineExceeded
                | ErrorKind::Cancelled
                | ErrorKind::Unknown
                | ErrorKind::Internal
                | ErrorKind::ResourceExhausted
                | ErrorKind::Aborted
                | ErrorKind::DataLoss
        )
    }

    /// Whether the same request may succeed later (overload, an outage).
    pub fn retryable_by_default(self) -> bool {
        matches!(
            self,
            ErrorKind::Unavailable | ErrorKind::ResourceExhausted | ErrorKind::Aborted
        )
    }

    /// Whether the fault is the server's (then its cause is logged for the
    /// operator, and the caller gets no details of it).
    pub fn is_server_fault(self) -> bool {
        matches!(
            self,
            ErrorKind::Internal | ErrorKind::Unknown | ErrorKind::DataLoss
        )
    }
}

/// What a caller is told of a failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorDescription {
    pub kind: ErrorKind,
    /// For people: what went wrong and what to do.
    pub message: String,
    /// For programs: a SCREAMING_SNAKE_CASE reason (see [`crate::reasons`]).
    pub reason: Option<String>,
    /// Facts that go with the reason (`product_id`, `order_id`, …).
    pub metadata: Vec<(String, String)>,
    /// Whether the same request may succeed if tried again.
    pub retryable: bool,
}

impl ErrorDescription {
    /// A description with no reason, retryable as the kind says.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            reason: None,
            metadata: Vec::new(),
            retryable: kind.retryable_by_default(),
        }
    }

    pub fn with_reason(mut self, reason: &str) -> Self {
        self.reason = Some(reason.to_owned());
        self
    }

    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.push((key.to_owned(), value.into()));
        self
    }

    /// The value of metadata `key`, if given.
    pub fn fact(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A failure that can say how a caller should see it.
pub trait Describe: std::error::Error {
    fn describe(&self) -> ErrorDescription;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_say_what_a_caller_may_assume() {
        assert!(ErrorKind::Unavailable.outcome_unknown());
        assert!(!ErrorKind::NotFound.outcome_unknown());
        assert!(!ErrorKind::FailedPrecondition.outcome_unknown());
        assert!(ErrorKind::Unavailable.retryable_by_default());
        assert!(!ErrorKind::InvalidArgument.retryable_by_default());
        assert!(ErrorKind::Internal.is_server_fault());
        assert!(!ErrorKind::Unavailable.is_server_fault());
    }

    #[test]
    fn descriptions_carry_reason_and_facts() {
        let described = ErrorDescription::new(ErrorKind::FailedPrecondition, "out of stock")
            .with_reason(crate::reasons::OUT_OF_STOCK)
            .with("product_id", "sku-mug");
        assert_eq!(described.reason.as_deref(), Some("OUT_OF_STOCK"));
        assert_eq!(described.fact("product_id"), Some("sku-mug"));
        assert_eq!(described.fact("order_id"), None);
        assert!(!described.retryable);
    }
}

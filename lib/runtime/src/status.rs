//! Domain failures into gRPC statuses, and back: one generic [`to_status`]
//! for every service's errors (each describes itself, see
//! `ordermesh_domain::error`), and [`describe_status`] for callers that read
//! a peer's answer (the saga, the gateway). A status carries the message for
//! people and a `google.rpc.ErrorInfo` reason for programs.

use std::collections::HashMap;
use std::fmt;

use ordermesh_domain::reasons::DOMAIN;
use ordermesh_domain::{Describe, ErrorDescription, ErrorKind};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

/// The one way a failure becomes a status. A server fault's cause (the
/// error and its sources) goes to the log for the operator, never to the
/// caller; so does the cause of an outage.
pub fn to_status<E: Describe>(error: E) -> Status {
    let description = error.describe();
    if description.kind.is_server_fault() {
        tracing::error!(error = %Chain(&error), "request failed");
    } else if std::error::Error::source(&error).is_some() {
        tracing::warn!(error = %Chain(&error), "request failed");
    }
    described(&description)
}

/// A handler's answer: its result converted for the wire, or its error as
/// a status. Keeps each gRPC handler to the call it makes.
pub fn reply<T, P, E: Describe>(
    result: Result<T, E>,
    convert: impl FnOnce(T) -> P,
) -> Result<tonic::Response<P>, Status> {
    result
        .map(|value| tonic::Response::new(convert(value)))
        .map_err(to_status)
}

/// The status of a description.
pub fn described(description: &ErrorDescription) -> Status {
    let code = code(description.kind);
    let Some(reason) = &description.reason else {
        return Status::new(code, description.message.clone());
    };
    let metadata: HashMap<String, String> = description.metadata.iter().cloned().collect();
    let details = ErrorDetails::with_error_info(reason.clone(), DOMAIN, metadata);
    Status::with_error_details(code, description.message.clone(), details)
}

/// What a peer's status says: its kind, message, reason and facts. An OK
/// status is not a failure; it reads as `Unknown`, which no caller gets.
pub fn describe_status(status: &Status) -> ErrorDescription {
    let kind = if is_timeout(status) {
        ErrorKind::DeadlineExceeded
    } else {
        kind(status.code()).unwrap_or(ErrorKind::Unknown)
    };
    let mut description = ErrorDescription::new(kind, status.message());
    if let Some(info) = status.get_details_error_info() {
        if !info.reason.is_empty() {
            description.reason = Some(info.reason);
        }
        let mut metadata: Vec<(String, String)> = info.metadata.into_iter().collect();
        metadata.sort();
        description.metadata = metadata;
    }
    description
}

/// Whether `status` is tonic's answer to a deadline that passed: tonic
/// says CANCELLED, "Timeout expired" (its `TimeoutExpired`, on either side
/// of a call with a `grpc-timeout`), where gRPC means DEADLINE_EXCEEDED.
/// Read as a cancel, a slow peer would look like a caller that gave up.
pub fn is_timeout(status: &Status) -> bool {
    status.code() == Code::Cancelled && status.message() == tonic::TimeoutExpired(()).to_string()
}

/// The ErrorInfo reason of `status`, if it carries one.
pub fn reason(status: &Status) -> Option<String> {
    describe_status(status).reason
}

/// The gRPC code of a kind of failure.
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::Cancelled => Code::Cancelled,
        ErrorKind::Unknown => Code::Unknown,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::PermissionDenied => Code::PermissionDenied,
        ErrorKind::ResourceExhausted => Code::ResourceExhausted,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Aborted => Code::Aborted,
        ErrorKind::OutOfRange => Code::OutOfRange,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::DataLoss => Code::DataLoss,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
    }
}

/// The kind of a gRPC code; None for OK.
pub fn kind(code: Code) -> Option<ErrorKind> {
    Some(match code {
        Code::Ok => return None,
        Code::Cancelled => ErrorKind::Cancelled,
        Code::Unknown => ErrorKind::Unknown,
        Code::InvalidArgument => ErrorKind::InvalidArgument,
        Code::DeadlineExceeded => ErrorKind::DeadlineExceeded,
        Code::NotFound => ErrorKind::NotFound,
        Code::AlreadyExists => ErrorKind::AlreadyExists,
        Code::PermissionDenied => ErrorKind::PermissionDenied,
        Code::ResourceExhausted => ErrorKind::ResourceExhausted,
        Code::FailedPrecondition => ErrorKind::FailedPrecondition,
        Code::Aborted => ErrorKind::Aborted,
        Code::OutOfRange => ErrorKind::OutOfRange,
        Code::Unimplemented => ErrorKind::Unimplemented,
        Code::Internal => ErrorKind::Internal,
        Code::Unavailable => ErrorKind::Unavailable,
        Code::DataLoss => ErrorKind::DataLoss,
        Code::Unauthenticated => ErrorKind::Unauthenticated,
    })
}

/// An error and its sources, `outer: inner: innermost`.
struct Chain<'a>(&'a dyn std::error::Error);

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("not enough stock")]
    struct OutOfStock;

    impl Describe for OutOfStock {
        fn describe(&self) -> ErrorDescription {
            ErrorDescription::new(ErrorKind::FailedPrecondition, self.to_string())
                .with_reason("OUT_OF_STOCK")
                .with("product_id", "sku-1")
        }
    }

    #[test]
    fn descriptions_round_trip_through_a_status() {
        let status = to_status(OutOfStock);
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(status.message(), "not enough stock");
        let read = describe_status(&status);
        assert_eq!(read, OutOfStock.describe());
        assert_eq!(reason(&Status::internal("x")), None);
        assert_eq!(
            describe_status(&Status::internal("x")).kind,
            ErrorKind::Internal
        );
    }

    #[test]
    fn every_code_has_its_kind() {
        for n in 1..=16 {
            let code = Code::from(n);
            assert_eq!(kind(code).map(self::code), Some(code), "{code:?}");
        }
        assert_eq!(kind(Code::Ok), None);
    }

    #[test]
    fn tonic_timeouts_read_as_deadlines_not_cancels() {
        let timeout = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert_eq!(timeout.code(), Code::Cancelled, "tonic's mapping changed");
        assert_eq!(describe_status(&timeout).kind, ErrorKind::DeadlineExceeded);
        let cancelled = Status::cancelled("the client went away");
        assert_eq!(describe_status(&cancelled).kind, ErrorKind::Cancelled);
    }
}

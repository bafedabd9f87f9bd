//! `EventService.WatchEvents`: the outbox followed with a cursor, for
//! operators without a broker. The cursor is the outbox position, which is
//! gap-free and in commit order (`ordermesh_storage::outbox`), so a watcher
//! that resumes after its last cursor misses nothing the outbox still keeps.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use ordermesh_identity::Verifier;
use ordermesh_proto::events::v1::event_service_server::{EventService, EventServiceServer};
use ordermesh_proto::events::v1::{
    EventStream, OrderEvent, StockEvent, WatchEventsRequest, WatchEventsResponse,
    watch_events_response,
};
use ordermesh_storage::outbox::{Outbox, OutboxRow};
use prost::Message;
use sqlx::AnyPool;
use tonic::{Request, Response, Status};

use crate::relay::StreamSpec;

/// How often a caught-up watcher looks for new rows.
const POLL: Duration = Duration::from_millis(200);
/// Rows read per look.
const PAGE: i64 = 256;

/// One service's outbox, watchable.
pub struct EventWatch {
    pub outbox: Outbox,
    pub pool: AnyPool,
    pub stream: StreamSpec,
    /// Which request stream this service serves.
    pub serves: EventStream,
    pub verifier: Verifier,
}

impl EventWatch {
    /// The tonic server, with what every role's services share.
    pub fn server(self) -> EventServiceServer<Self> {
        ordermesh_runtime::grpc_service!(EventServiceServer::new(self))
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<WatchEventsResponse, Status>> + Send>>;

/// The cursor of a request: empty is the start.
pub fn parse_cursor(cursor: &str) -> Result<i64, Status> {
    if cursor.is_empty() {
        return Ok(0);
    }
    cursor
        .parse::<i64>()
        .ok()
        .filter(|position| *position >= 0)
        .ok_or_else(|| Status::invalid_argument(format!("not a cursor: {cursor:?}")))
}

fn response(stream: &StreamSpec, row: &OutboxRow) -> Result<WatchEventsResponse, Status> {
    let undecodable = |e: prost::DecodeError| {
        tracing::error!(position = row.position, error = %e, "an outbox row that does not decode");
        Status::internal("an event could not be read")
    };
    let event = match row.message_type.as_str() {
        "ordermesh.events.v1.StockEvent" => watch_events_response::Event::Stock(
            StockEvent::decode(row.payload.as_slice()).map_err(undecodable)?,
        ),
        _ => watch_events_response::Event::Order(
            OrderEvent::decode(row.payload.as_slice()).map_err(undecodable)?,
        ),
    };
    Ok(WatchEventsResponse {
        cursor: row.position.to_string(),
        subject: format!("{}.{}", stream.subject_prefix, row.event_type),
        event: Some(event),
    })
}

#[tonic::async_trait]
impl EventService for EventWatch {
    type WatchEventsStream = Events;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Events>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let identity = match self.verifier.verify_authorization(header).await {
            Ok(identity) => identity,
            Err(refused) if refused.is_unavailable() => {
                return Err(Status::unavailable(refused.to_string()));
            }
            Err(refused) => return Err(Status::unauthenticated(refused.to_string())),
        };
        if !identity.admin {
            return Err(Status::permission_denied(
                "watching events needs an orders:admin token",
            ));
        }
        let request = request.into_inner();
        let wanted = match request.stream() {
            EventStream::Unspecified => EventStream::Orders,
            other => other,
        };
        if wanted != self.serves {
            return Err(Status::failed_precondition(format!(
                "this service serves {} events; ask the {} service",
                self.stream.service,
                match wanted {
                    EventStream::Stock => "inventory",
                    _ => "order",
                }
            )));
        }
        let mut after = parse_cursor(&request.cursor)?;
        let (outbox, pool, stream) = (self.outbox, self.pool.clone(), self.stream);
        let events = async_stream::try_stream! {
            loop {
                let rows = outbox
                    .after(&pool, after, PAGE)
                    .await
                    .map_err(|e| Status::unavailable(format!("reading the outbox: {e}")))?;
                let full = rows.len() as i64 == PAGE;
                for row in &rows {
                    after = row.position;
                    yield response(&stream, row)?;
                }
                if !full {
                    tokio::time::sleep(POLL).await;
                }
            }
        };
        Ok(Response::new(Box::pin(events)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_positions() {
        assert_eq!(parse_cursor("").ok(), Some(0));
        assert_eq!(parse_cursor("42").ok(), Some(42));
        for bad in ["-1", "x", "4.2", " 1"] {
            assert_eq!(
                parse_cursor(bad).map_err(|s| s.code()).err(),
                Some(tonic::Code::InvalidArgument),
                "{bad}"
            );
        }
    }
}

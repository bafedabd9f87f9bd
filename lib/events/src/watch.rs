//! `EventService.WatchEvents`: the outbox followed with a cursor, for
//! operators without a broker. The cursor is the outbox position, which is
//! gap-free and in commit order (`ordermesh_storage::outbox`), so a watcher
//! that resumes after its last cursor misses nothing the outbox still keeps.

use std::pin::Pin;
use std::time::Duration;

use futures::Stream;
use ordermesh_identity::Verifier;
use ordermesh_proto::events::v1::event_service_server::{EventService, EventServiceServer};
use ordermesh_proto::events::v1::stock_event_service_server::{
    StockEventService, StockEventServiceServer,
};
use ordermesh_proto::events::v1::{
    EventStream, OrderEvent, StockEvent, WatchEventsRequest, WatchEventsResponse,
    WatchStockEventsRequest, watch_events_response,
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

/// One service's outbox, watchable: `EventService` for its stream and, at
/// the inventory service, `StockEventService` too; both follow the outbox
/// the same way.
#[derive(Clone)]
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

    /// `StockEventService`, for the service whose outbox records stock.
    pub fn stock_server(self) -> StockEventServiceServer<Self> {
        ordermesh_runtime::grpc_service!(StockEventServiceServer::new(self))
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

impl EventWatch {
    /// The caller must hold an `orders:admin` token.
    async fn authorize(&self, metadata: &tonic::metadata::MetadataMap) -> Result<(), Status> {
        let header = metadata.get("authorization").map(|v| v.as_bytes());
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
        Ok(())
    }

    /// Refuses a stream another service's outbox records.
    fn serves(&self, wanted: EventStream) -> Result<(), Status> {
        if wanted == self.serves {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "this service serves {} events; ask {}",
            self.stream.service,
            match wanted {
                EventStream::Stock => "the inventory service (or its StockEventService)",
                _ => "the order service",
            }
        )))
    }

    /// The outbox's rows after `cursor`, then each new one, for as long as
    /// the caller reads.
    fn follow(&self, cursor: &str) -> Result<Events, Status> {
        let mut after = parse_cursor(cursor)?;
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
        Ok(Box::pin(events))
    }
}

#[tonic::async_trait]
impl EventService for EventWatch {
    type WatchEventsStream = Events;

    async fn watch_events(
        &self,
        request: Request<WatchEventsRequest>,
    ) -> Result<Response<Events>, Status> {
        self.authorize(request.metadata()).await?;
        let request = request.into_inner();
        self.serves(match request.stream() {
            EventStream::Unspecified => EventStream::Orders,
            other => other,
        })?;
        Ok(Response::new(self.follow(&request.cursor)?))
    }
}

#[tonic::async_trait]
impl StockEventService for EventWatch {
    type WatchStockEventsStream = Events;

    async fn watch_stock_events(
        &self,
        request: Request<WatchStockEventsRequest>,
    ) -> Result<Response<Events>, Status> {
        self.authorize(request.metadata()).await?;
        self.serves(EventStream::Stock)?;
        Ok(Response::new(self.follow(&request.get_ref().cursor)?))
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

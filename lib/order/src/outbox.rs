//! The order service's events (`ordermesh.events.v1.OrderEvent`), written to
//! its outbox in the transaction of the change they report (`store.rs`
//! calls [`record`] as each transaction's last statement). The relay in
//! `ordermesh-events` publishes them; nothing here talks to a broker.

use ordermesh_domain::Money;
use ordermesh_proto::events::v1 as proto;
use ordermesh_storage::outbox::{NewEvent, Outbox};
use ordermesh_storage::{Param, Tx};
use prost::Message;

use crate::domain::{FailureReason, OrderStatus, SagaState};

/// The order service's outbox tables (`order_outbox…`).
pub const OUTBOX: Outbox = Outbox::new("order");

/// The protobuf type named in every order event's type header.
pub const MESSAGE_TYPE: &str = "ordermesh.events.v1.OrderEvent";

/// What an order change tells the world.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Placed,
    Confirmed,
    Failed,
    Cancelled,
    Refunded,
}

impl EventKind {
    /// The subject's last token: `ordermesh.orders.<this>`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Placed => "placed",
            EventKind::Confirmed => "confirmed",
            EventKind::Failed => "failed",
            EventKind::Cancelled => "cancelled",
            EventKind::Refunded => "refunded",
        }
    }

    fn to_proto(self) -> proto::OrderEventKind {
        match self {
            EventKind::Placed => proto::OrderEventKind::Placed,
            EventKind::Confirmed => proto::OrderEventKind::Confirmed,
            EventKind::Failed => proto::OrderEventKind::Failed,
            EventKind::Cancelled => proto::OrderEventKind::Cancelled,
            EventKind::Refunded => proto::OrderEventKind::Refunded,
        }
    }
}

/// The event a saga step from `before` to `after` reports, if any: the
/// order settling (confirmed or failed), or a cancelled order's payment
/// given back (refunded). Cancelling itself is `store::cancel`'s event.
pub fn event_for(before: &SagaState, after: &SagaState) -> Option<EventKind> {
    match (before.status, after.status) {
        (OrderStatus::Confirmed, OrderStatus::Confirmed) | (OrderStatus::Failed, _) => None,
        (_, OrderStatus::Confirmed) => Some(EventKind::Confirmed),
        (_, OrderStatus::Failed) => Some(EventKind::Failed),
        (OrderStatus::Cancelled, OrderStatus::Cancelled)
            if before.compensate_payment && !after.compensate_payment =>
        {
            Some(EventKind::Refunded)
        }
        _ => None,
    }
}

/// What an order event says of the order, as its transaction leaves it.
#[derive(Clone, Copy, Debug)]
pub struct OrderFacts<'a> {
    pub order_id: &'a str,
    pub customer_id: &'a str,
    pub status: OrderStatus,
    pub failure_reason: Option<FailureReason>,
    pub total: Money,
}

/// Records `kind` about `order_id`, reading the order as the transaction
/// `tx` left it (for a change whose caller does not hold the order).
pub async fn record(
    tx: &mut Tx,
    order_id: &str,
    kind: EventKind,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let event = tx
        .query_optional(
            "SELECT customer_id, status, failure_reason, total_minor_units, currency \
             FROM order_orders WHERE order_id = $1",
            &[Param::Text(order_id)],
            |order| {
                Ok(proto::OrderEvent {
                    header: None,
                    kind: kind.to_proto().into(),
                    order_id: order_id.to_owned(),
                    customer_id: order.text("customer_id")?,
                    status: order.text("status")?,
                    failure_reason: order.text_or_null("failure_reason")?.unwrap_or_default(),
                    total_minor_units: order.int("total_minor_units")?,
                    currency: order.text("currency")?,
                })
            },
        )
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    write(tx, event, kind, now_ms).await
}

/// Records `kind` about the order `facts` describe.
pub async fn record_of(
    tx: &mut Tx,
    facts: &OrderFacts<'_>,
    kind: EventKind,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let event = proto::OrderEvent {
        header: None,
        kind: kind.to_proto().into(),
        order_id: facts.order_id.to_owned(),
        customer_id: facts.customer_id.to_owned(),
        status: facts.status.as_str().to_owned(),
        failure_reason: facts
            .failure_reason
            .map_or_else(String::new, |r| r.as_str().to_owned()),
        total_minor_units: facts.total.minor_units,
        currency: facts.total.currency.as_str().to_owned(),
    };
    write(tx, event, kind, now_ms).await
}

/// Writes `event` (its header filled in) to the outbox.
async fn write(
    tx: &mut Tx,
    mut event: proto::OrderEvent,
    kind: EventKind,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let aggregate_id = event.order_id.clone();
    OUTBOX
        .record(
            tx,
            NewEvent {
                aggregate_id: &aggregate_id,
                event_type: kind.as_str(),
                message_type: MESSAGE_TYPE,
                traceparent: ordermesh_runtime::trace::current_traceparent(),
                now_ms,
            },
            |header| {
                event.header = Some(header.to_proto());
                event.encode_to_vec()
            },
        )
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::saga;
    use crate::domain::{FailureReason, Step};

    fn state(status: OrderStatus, step: Step, compensate_payment: bool) -> SagaState {
        SagaState {
            status,
            step,
            failure_reason: None,
            compensate_stock: false,
            compensate_payment,
            attempts: 0,
        }
    }

    #[test]
    fn a_saga_reports_settling_once() {
        let pending = SagaState::new_order();
        let charging = state(OrderStatus::Pending, Step::Charge, true);
        let confirmed = state(OrderStatus::Confirmed, Step::Done, false);
        assert_eq!(event_for(&pending, &charging), None, "steps are not events");
        assert_eq!(event_for(&charging, &confirmed), Some(EventKind::Confirmed));
        assert_eq!(event_for(&confirmed, &confirmed), None, "once");

        let mut failing = state(OrderStatus::Failed, Step::Compensate, true);
        failing.failure_reason = Some(FailureReason::CardDeclined);
        let failed = state(OrderStatus::Failed, Step::Done, false);
        assert_eq!(event_for(&charging, &failing), Some(EventKind::Failed));
        assert_eq!(
            event_for(&failing, &failed),
            None,
            "compensation after a failure is not another event"
        );
    }

    #[test]
    fn a_cancel_reports_its_refund() {
        let confirmed = state(OrderStatus::Confirmed, Step::Done, false);
        let cancelled = saga::cancel(confirmed).expect("a confirmed order cancels");
        let refunded = SagaState {
            compensate_payment: false,
            ..cancelled
        };
        assert_eq!(event_for(&cancelled, &refunded), Some(EventKind::Refunded));
        let restocked = state(OrderStatus::Cancelled, Step::Done, false);
        assert_eq!(event_for(&refunded, &restocked), None);
        // Refund and restock in one step still report the refund.
        assert_eq!(event_for(&cancelled, &restocked), Some(EventKind::Refunded));
    }

    async fn events_are_written_with_their_changes(database: &ordermesh_testkit::TestDatabase) {
        use crate::store::{Inserted, OrderStore};
        use ordermesh_domain::{Currency, Money, PaymentMethod};
        use std::time::Duration;

        let db = ordermesh_storage::Database::open(
            database.settings(),
            "order",
            &sqlx::migrate!("./migrations"),
        )
        .await
        .expect("open");
        let store = OrderStore::new(db.clone());
        let request = crate::domain::NewOrder {
            customer_id: "cust_events".to_owned(),
            items: Vec::new(),
            payment_method: PaymentMethod::parse("pm_card_visa").expect("known token"),
            idempotency_key: None,
        };
        let total = Money::new(Currency::USD, 1200);
        let Inserted::New { .. } = store
            .insert("ord_ev", &request, &[], total, 10, None)
            .await
            .expect("insert")
        else {
            panic!("a new order");
        };
        let leases = crate::store::Leases {
            holder: "holder-ev".to_owned(),
            lease: Duration::from_secs(5),
            holder_timeout: Duration::from_secs(2),
        };
        store.heartbeat(&leases.holder, 1).await.expect("heartbeat");
        let claimed = store
            .claim("ord_ev", "me", &leases)
            .await
            .expect("claim")
            .expect("free");
        let (claimed, lease) = (claimed.order, claimed.lease);
        let charging = state(OrderStatus::Pending, Step::Charge, true);
        let order = store
            .advance(
                &claimed,
                &lease,
                &charging,
                None,
                12,
                Duration::from_secs(5),
            )
            .await
            .expect("advance")
            .expect("leased");
        let confirmed = state(OrderStatus::Confirmed, Step::Done, false);
        store
            .advance(&order, &lease, &confirmed, None, 13, Duration::from_secs(5))
            .await
            .expect("advance")
            .expect("leased");
        let cancelled = saga::cancel(confirmed).expect("cancels");
        assert!(
            store
                .cancel("ord_ev", &cancelled, 14)
                .await
                .expect("cancel")
        );
        assert!(
            !store
                .cancel("ord_ev", &cancelled, 15)
                .await
                .expect("cancel")
        );

        let rows = OUTBOX.after(db.pool(), 0, 100).await.expect("read");
        let kinds: Vec<&str> = rows.iter().map(|row| row.event_type.as_str()).collect();
        assert_eq!(kinds, ["placed", "confirmed", "cancelled"]);
        let positions: Vec<i64> = rows.iter().map(|row| row.position).collect();
        assert_eq!(positions, [1, 2, 3], "gap-free, in commit order");
        let sequences: Vec<i64> = rows.iter().map(|row| row.sequence).collect();
        assert_eq!(sequences, [1, 2, 3], "per aggregate");
        let event = proto::OrderEvent::decode(rows[2].payload.as_slice()).expect("protobuf");
        assert_eq!(event.kind(), proto::OrderEventKind::Cancelled);
        assert_eq!(event.customer_id, "cust_events");
        assert_eq!(event.total_minor_units, 1200);
        let header = event.header.expect("a header");
        assert_eq!(header.event_id, rows[2].event_id);
        assert_eq!(header.sequence, 3);

        let backlog = OUTBOX.backlog(db.pool()).await.expect("backlog");
        assert_eq!((backlog.rows, backlog.oldest_recorded_at_ms), (3, Some(10)));
        OUTBOX
            .mark_published(db.pool(), &[1, 2], 20)
            .await
            .expect("mark");
        let pending = OUTBOX.pending(db.pool(), 10).await.expect("pending");
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].position, 3);
        assert_eq!(OUTBOX.prune(db.pool(), 21).await.expect("prune"), 2);
        assert_eq!(OUTBOX.after(db.pool(), 0, 10).await.expect("read").len(), 1);

        assert!(
            OUTBOX
                .try_lease(db.pool(), "a", 100, 50)
                .await
                .expect("lease")
        );
        assert!(
            !OUTBOX
                .try_lease(db.pool(), "b", 120, 50)
                .await
                .expect("lease")
        );
        assert!(
            OUTBOX
                .try_lease(db.pool(), "a", 140, 50)
                .await
                .expect("renew")
        );
        assert!(
            OUTBOX
                .try_lease(db.pool(), "b", 200, 50)
                .await
                .expect("expired")
        );
        OUTBOX.release_lease(db.pool(), "b").await.expect("release");
        assert!(
            OUTBOX
                .try_lease(db.pool(), "a", 201, 50)
                .await
                .expect("free")
        );
    }

    #[tokio::test]
    async fn events_are_written_with_their_changes_on_sqlite() {
        events_are_written_with_their_changes(&ordermesh_testkit::TestDatabase::sqlite()).await;
    }

    #[tokio::test]
    async fn events_are_written_with_their_changes_on_postgres() {
        let Some(database) = ordermesh_testkit::TestDatabase::postgres().await else {
            return;
        };
        events_are_written_with_their_changes(&database).await;
    }
}

//! The inventory service's events (`ordermesh.events.v1.StockEvent`), written
//! to its outbox in the transaction that changes a product's available
//! stock (`store.rs` calls [`record_changes`] as the transaction's last
//! statements). The relay in `ordermesh-events` publishes them.

use ordermesh_proto::events::v1 as proto;
use ordermesh_storage::outbox::{NewEvent, Outbox};
use ordermesh_storage::{Param, Tx};
use prost::Message;

/// The inventory service's outbox tables (`inventory_outbox…`).
pub const OUTBOX: Outbox = Outbox::new("inventory");

/// The protobuf type named in every stock event's type header.
pub const MESSAGE_TYPE: &str = "ordermesh.events.v1.StockEvent";

/// At or below this many available units a product is low on stock.
pub const LOW_STOCK: i64 = 5;

/// Whether a change from `before` to `after` available units crosses into
/// low stock (reported once per crossing, not on every sale below it).
pub fn turns_low(before: i64, after: i64) -> bool {
    after <= LOW_STOCK && before > LOW_STOCK
}

/// Records a `changed` event per product whose available stock moved by its
/// delta (and `low` when it crossed [`LOW_STOCK`]), reading the product as
/// the transaction `tx` left it. Call it after the transaction's last
/// product update: the outbox's position counter, locked here until
/// commit, is then always the last lock taken, so no two transactions wait
/// on each other in a cycle.
pub async fn record_changes<'a>(
    tx: &mut Tx,
    changes: impl IntoIterator<Item = (&'a str, i64)>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    // Collected first: the caller's iterator is not held across an await.
    let changes: Vec<(&str, i64)> = changes.into_iter().filter(|(_, d)| *d != 0).collect();
    let mut known = Vec::with_capacity(changes.len());
    for (product_id, delta) in changes {
        let available = tx
            .query_optional(
                "SELECT available FROM inventory_products WHERE product_id = $1",
                &[Param::Text(product_id)],
                |row| row.int("available"),
            )
            .await?
            .ok_or(sqlx::Error::RowNotFound)?;
        known.push((product_id, delta, available));
    }
    record_known(tx, known, now_ms).await
}

/// [`record_changes`] for changes whose caller already read each
/// product's available stock after the change (`product, delta, available`).
pub async fn record_known<'a>(
    tx: &mut Tx,
    changes: impl IntoIterator<Item = (&'a str, i64, i64)>,
    now_ms: i64,
) -> Result<(), sqlx::Error> {
    let mut changes: Vec<(&str, i64, i64)> =
        changes.into_iter().filter(|(_, d, _)| *d != 0).collect();
    changes.sort_unstable();
    for (product_id, delta, available) in changes {
        let mut kinds = vec![proto::StockEventKind::Changed];
        if turns_low(available - delta, available) {
            kinds.push(proto::StockEventKind::Low);
        }
        for kind in kinds {
            let event_type = match kind {
                proto::StockEventKind::Low => "low",
                _ => "changed",
            };
            let mut event = proto::StockEvent {
                header: None,
                kind: kind.into(),
                product_id: product_id.to_owned(),
                available,
                delta,
            };
            OUTBOX
                .record(
                    tx,
                    NewEvent {
                        aggregate_id: product_id,
                        event_type,
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
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn low_stock_is_reported_once_per_crossing() {
        assert!(turns_low(6, 5));
        assert!(turns_low(100, 0));
        assert!(!turns_low(5, 4), "already low");
        assert!(!turns_low(5, 6), "restocked");
        assert!(!turns_low(20, 10));
    }

    async fn stock_changes_are_written_with_them(database: &ordermesh_testkit::TestDatabase) {
        use crate::domain::ReserveRequest;
        use crate::store::InventoryStore;
        use std::time::Duration;

        let db = ordermesh_storage::Database::open(
            database.settings(),
            "inventory",
            &sqlx::migrate!("./migrations"),
        )
        .await
        .expect("open");
        let store = InventoryStore::new(db.clone());
        store.seed_if_empty(1).await.expect("seed");
        let before = store
            .product("sku-mug")
            .await
            .expect("read")
            .expect("seeded")
            .available;
        let request = ReserveRequest {
            reservation_id: "ord_stock".to_owned(),
            items: vec![("sku-mug".to_owned(), 2)],
        };
        store
            .reserve(&request, 10, Duration::from_secs(60), None)
            .await
            .expect("reserved");
        store
            .release("ord_stock", 11, None)
            .await
            .expect("released");
        let rows = OUTBOX.after(db.pool(), 0, 100).await.expect("read");
        let events: Vec<proto::StockEvent> = rows
            .iter()
            .map(|row| proto::StockEvent::decode(row.payload.as_slice()).expect("protobuf"))
            .collect();
        let seen: Vec<(&str, i64, i64)> = events
            .iter()
            .map(|e| (e.product_id.as_str(), e.delta, e.available))
            .collect();
        let before = i64::from(before);
        assert_eq!(
            seen,
            [("sku-mug", -2, before - 2), ("sku-mug", 2, before)],
            "reserved, then given back"
        );
        let sequences: Vec<i64> = rows.iter().map(|row| row.sequence).collect();
        assert_eq!(sequences, [1, 2]);
        assert!(rows.iter().all(|row| row.event_type == "changed"));
    }

    #[tokio::test]
    async fn stock_changes_are_written_with_them_on_sqlite() {
        stock_changes_are_written_with_them(&ordermesh_testkit::TestDatabase::sqlite()).await;
    }

    #[tokio::test]
    async fn stock_changes_are_written_with_them_on_postgres() {
        let Some(database) = ordermesh_testkit::TestDatabase::postgres().await else {
            return;
        };
        stock_changes_are_written_with_them(&database).await;
    }
}

//! The inventory service's events (`ordermesh.events.v1.StockEvent`), written
//! to its outbox in the transaction that changes a product's available
//! stock (`store.rs` calls [`record_changes`] as the transaction's last
//! statements). The relay in `ordermesh-events` publishes them.

use ordermesh_proto::events::v1 as proto;
use ordermesh_storage::Tx;
use ordermesh_storage::outbox::{NewEvent, Outbox};
use prost::Message;

use crate::domain::Product;

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

/// A product as the transaction that changed it left it, with the
/// sequence of the `changed` event that recorded the change: per product,
/// sequences follow commit order (the product's event counter stays locked
/// until commit), so an announcement older than one already made is known
/// to be stale.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StockChange {
    pub product: Product,
    pub sequence: i64,
}

/// Records a `changed` event per product whose available stock moved by
/// its delta (and `low` when it crossed [`LOW_STOCK`]); each product is as
/// the change's own statement returned it (`UPDATE … RETURNING`), so
/// nothing is read again. Call it after the transaction's last product
/// update: the outbox's position counter, locked here until commit, is
/// then always the last lock taken, so no two transactions wait on each
/// other in a cycle.
pub async fn record_changes(
    tx: &mut Tx,
    changes: Vec<(Product, i64)>,
    now_ms: i64,
) -> Result<Vec<StockChange>, sqlx::Error> {
    let mut changes = changes;
    changes.retain(|(_, delta)| *delta != 0);
    changes.sort_unstable_by(|(a, _), (b, _)| a.product_id.cmp(&b.product_id));
    let mut recorded = Vec::with_capacity(changes.len());
    for (product, delta) in changes {
        let product_id = product.product_id.as_str();
        let available = i64::from(product.available);
        let mut sequence = None;
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
            let header = OUTBOX
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
            if kind == proto::StockEventKind::Changed {
                sequence = Some(header.sequence);
            }
        }
        if let Some(sequence) = sequence {
            recorded.push(StockChange { product, sequence });
        }
    }
    Ok(recorded)
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

        let db = crate::open_database(database.settings())
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
        let reserved = match store
            .reserve(&request, 10, Duration::from_secs(60), None)
            .await
            .expect("reserved")
        {
            crate::store::Reserved::New(changed) => changed.stock,
            crate::store::Reserved::Existing(_) => panic!("a new reservation"),
        };
        let released = store
            .release("ord_stock", 11, None)
            .await
            .expect("released")
            .stock;
        // What each call announces is the product as its commit left it,
        // with the sequence of the event that recorded it.
        let announced: Vec<(i32, i64)> = reserved
            .iter()
            .chain(&released)
            .map(|change| (change.product.available, change.sequence))
            .collect();
        assert_eq!(announced, [(before - 2, 1), (before, 2)]);
        assert_eq!(
            store.product("sku-mug").await.expect("read"),
            released.first().map(|change| change.product.clone())
        );
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

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
    // Every event of the transaction, in order: each product's `changed`,
    // then its `low` if it crossed; recorded together (one round trip for
    // the counters, one for the rows). Each with its product's index.
    let mut events = Vec::with_capacity(changes.len() + 1);
    for (index, (product, delta)) in changes.iter().enumerate() {
        let available = i64::from(product.available);
        let event = |kind: proto::StockEventKind| proto::StockEvent {
            header: None,
            kind: kind.into(),
            product_id: product.product_id.clone(),
            available,
            delta: *delta,
        };
        events.push((index, "changed", event(proto::StockEventKind::Changed)));
        if turns_low(available - delta, available) {
            events.push((index, "low", event(proto::StockEventKind::Low)));
        }
    }
    let traceparent = ordermesh_runtime::trace::current_traceparent();
    let new_events = events
        .iter()
        .map(|(index, event_type, _)| NewEvent {
            aggregate_id: &changes[*index].0.product_id,
            event_type,
            message_type: MESSAGE_TYPE,
            traceparent: traceparent.clone(),
            now_ms,
        })
        .collect();
    let headers = OUTBOX
        .record_all(tx, new_events, |index, header| {
            let event = &mut events[index].2;
            event.header = Some(header.to_proto());
            event.encode_to_vec()
        })
        .await?;
    let mut sequences = vec![None; changes.len()];
    for ((product, event_type, _), header) in events.iter().zip(&headers) {
        if *event_type == "changed" {
            sequences[*product] = Some(header.sequence);
        }
    }
    Ok(changes
        .into_iter()
        .zip(sequences)
        .filter_map(|((product, _), sequence)| {
            sequence.map(|sequence| StockChange { product, sequence })
        })
        .collect())
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

    /// The inventory's database with the demo catalog, and its store.
    async fn seeded_store(
        database: &ordermesh_testkit::TestDatabase,
    ) -> (ordermesh_storage::Database, crate::store::InventoryStore) {
        let db = crate::open_database(database.settings())
            .await
            .expect("open");
        let store = crate::store::InventoryStore::new(db.clone());
        store.seed_if_empty(1).await.expect("seed");
        (db, store)
    }

    async fn available(store: &crate::store::InventoryStore, product_id: &str) -> i32 {
        store
            .product(product_id)
            .await
            .expect("read")
            .expect("seeded")
            .available
    }

    async fn stock_changes_are_written_with_them(database: &ordermesh_testkit::TestDatabase) {
        use crate::domain::ReserveRequest;
        use std::time::Duration;

        let (db, store) = seeded_store(database).await;
        let before = available(&store, "sku-mug").await;
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

    /// One reservation of three products, one of them crossing into low
    /// stock: its four events are recorded together, so their positions
    /// run on without a gap, in product order, each product's sequences
    /// counting its own events; the next reservation continues both.
    async fn a_transactions_events_are_recorded_together_in_order(
        database: &ordermesh_testkit::TestDatabase,
    ) {
        use crate::domain::ReserveRequest;
        use crate::store::Reserved;
        use std::time::Duration;

        let (db, store) = seeded_store(database).await;
        let grinder = available(&store, "sku-grinder").await;
        let to_low = i32::try_from(i64::from(grinder) - LOW_STOCK).expect("above low");
        let reserve = |id: &str, items: Vec<(&str, i32)>| ReserveRequest {
            reservation_id: id.to_owned(),
            items: items.into_iter().map(|(p, q)| (p.to_owned(), q)).collect(),
        };
        let announced = |reserved: Reserved| match reserved {
            Reserved::New(changed) => changed
                .stock
                .into_iter()
                .map(|change| (change.product.product_id, change.sequence))
                .collect::<Vec<_>>(),
            Reserved::Existing(_) => panic!("a new reservation"),
        };
        let first = store
            .reserve(
                &reserve(
                    "ord_batch_1",
                    vec![("sku-mug", 2), ("sku-grinder", to_low), ("sku-espresso", 1)],
                ),
                10,
                Duration::from_secs(60),
                None,
            )
            .await
            .expect("reserved");
        let second = store
            .reserve(
                &reserve("ord_batch_2", vec![("sku-grinder", 1)]),
                11,
                Duration::from_secs(60),
                None,
            )
            .await
            .expect("reserved");
        let owned = |pairs: &[(&str, i64)]| -> Vec<(String, i64)> {
            pairs.iter().map(|(p, s)| ((*p).to_owned(), *s)).collect()
        };
        assert_eq!(
            announced(first),
            owned(&[("sku-espresso", 1), ("sku-grinder", 1), ("sku-mug", 1)]),
            "each product with the sequence of its `changed` event"
        );
        assert_eq!(announced(second), owned(&[("sku-grinder", 3)]));

        let rows = OUTBOX.after(db.pool(), 0, 100).await.expect("read");
        let recorded: Vec<(i64, &str, &str, i64)> = rows
            .iter()
            .map(|row| {
                (
                    row.position,
                    row.aggregate_id.as_str(),
                    row.event_type.as_str(),
                    row.sequence,
                )
            })
            .collect();
        assert_eq!(
            recorded,
            [
                (1, "sku-espresso", "changed", 1),
                (2, "sku-grinder", "changed", 1),
                (3, "sku-grinder", "low", 2),
                (4, "sku-mug", "changed", 1),
                (5, "sku-grinder", "changed", 3),
            ]
        );
        for row in &rows {
            let event = proto::StockEvent::decode(row.payload.as_slice()).expect("protobuf");
            let header = event.header.expect("a header");
            assert_eq!(
                (header.event_id.as_str(), header.sequence),
                (row.event_id.as_str(), row.sequence),
                "the payload carries its own row's header"
            );
            assert_eq!(event.product_id, row.aggregate_id);
        }
        let low = proto::StockEvent::decode(rows[2].payload.as_slice()).expect("protobuf");
        assert_eq!(
            (low.kind, low.available),
            (i32::from(proto::StockEventKind::Low), LOW_STOCK)
        );
    }

    #[tokio::test]
    async fn a_transactions_events_are_recorded_together_in_order_on_sqlite() {
        a_transactions_events_are_recorded_together_in_order(
            &ordermesh_testkit::TestDatabase::sqlite(),
        )
        .await;
    }

    #[tokio::test]
    async fn a_transactions_events_are_recorded_together_in_order_on_postgres() {
        let Some(database) = ordermesh_testkit::TestDatabase::postgres().await else {
            return;
        };
        a_transactions_events_are_recorded_together_in_order(&database).await;
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

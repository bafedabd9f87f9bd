//! Order changes made by this replica, delivered to whoever waits on that
//! order: CreateOrder waiting for the saga's end, and WatchOrder streams.
//!
//! One channel per watched order, so a change wakes only the waiters of its
//! own order (one channel for all would wake every waiter on every change).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::broadcast;
pub use tokio::sync::broadcast::error::RecvError;

use crate::store::StoredOrder;

/// Changes one waiter may fall behind by; a lagging waiter loses old
/// changes, never blocks the saga, and re-reads the order from the store.
const CAPACITY: usize = 16;

type Channels = HashMap<String, broadcast::Sender<Arc<StoredOrder>>>;

#[derive(Clone, Debug, Default)]
pub struct OrderHub {
    channels: Arc<Mutex<Channels>>,
}

impl OrderHub {
    /// Delivers `order` to its waiters, if any.
    pub fn publish(&self, order: Arc<StoredOrder>) {
        if let Some(sender) = self.lock().get(&order.view.order_id) {
            // Every receiver may have just gone: nobody is watching.
            let _ = sender.send(order);
        }
    }

    /// The changes of `order_id` from now on.
    pub fn subscribe(&self, order_id: &str) -> OrderChanges {
        let receiver = self
            .lock()
            .entry(order_id.to_owned())
            .or_insert_with(|| broadcast::channel(CAPACITY).0)
            .subscribe();
        OrderChanges {
            hub: self.clone(),
            order_id: order_id.to_owned(),
            receiver,
        }
    }

    /// How many orders have waiters (for tests).
    #[cfg(test)]
    pub fn watched_orders(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> MutexGuard<'_, Channels> {
        // The map stays consistent whatever panicked while holding it.
        self.channels.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One waiter's view of one order's changes; the order's channel goes away
/// with its last waiter.
#[derive(Debug)]
pub struct OrderChanges {
    hub: OrderHub,
    order_id: String,
    receiver: broadcast::Receiver<Arc<StoredOrder>>,
}

impl OrderChanges {
    pub async fn recv(&mut self) -> Result<Arc<StoredOrder>, RecvError> {
        self.receiver.recv().await
    }
}

impl Drop for OrderChanges {
    fn drop(&mut self) {
        let mut channels = self.hub.lock();
        // Our own receiver still counts until this returns.
        if channels
            .get(&self.order_id)
            .is_some_and(|sender| sender.receiver_count() <= 1)
        {
            channels.remove(&self.order_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{OrderStatus, OrderView, SagaState};
    use ordermesh_domain::{Currency, Money};

    fn order(order_id: &str, version: i64) -> Arc<StoredOrder> {
        Arc::new(StoredOrder {
            view: OrderView {
                order_id: order_id.to_owned(),
                customer_id: "c".to_owned(),
                lines: Vec::new(),
                total: Money::new(Currency::parse("EUR").unwrap(), 100),
                status: OrderStatus::Pending,
                failure_reason: None,
                created_at_ms: 0,
                updated_at_ms: 0,
                version,
            },
            saga: SagaState::new_order(),
            payment_method: "tok".to_owned(),
        })
    }

    #[tokio::test]
    async fn a_waiter_sees_only_its_own_order() {
        let hub = OrderHub::default();
        let mut a = hub.subscribe("ord_a");
        let _b = hub.subscribe("ord_b");
        hub.publish(order("ord_b", 1));
        hub.publish(order("ord_a", 2));
        let change = a.recv().await.unwrap();
        assert_eq!(
            (change.view.order_id.as_str(), change.view.version),
            ("ord_a", 2)
        );
        assert!(
            a.receiver.is_empty(),
            "ord_b's change never reached ord_a's waiter"
        );
    }

    #[tokio::test]
    async fn the_channel_goes_with_its_last_waiter() {
        let hub = OrderHub::default();
        let first = hub.subscribe("ord_a");
        let second = hub.subscribe("ord_a");
        assert_eq!(hub.watched_orders(), 1);
        drop(first);
        assert_eq!(hub.watched_orders(), 1, "one waiter is left");
        drop(second);
        assert_eq!(hub.watched_orders(), 0);
        // Publishing with nobody watching is a no-op.
        hub.publish(order("ord_a", 3));
        assert_eq!(hub.watched_orders(), 0);
    }
}

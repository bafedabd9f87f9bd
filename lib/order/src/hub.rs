//! Order changes made by this replica, broadcast to whoever waits on them:
//! CreateOrder waiting for the saga's end, and WatchOrder streams.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::store::StoredOrder;

/// Lagging receivers lose old changes, never block the saga; they then
/// re-read the order from the store.
const CAPACITY: usize = 1024;

#[derive(Clone, Debug)]
pub struct OrderHub {
    sender: broadcast::Sender<Arc<StoredOrder>>,
}

impl Default for OrderHub {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
        }
    }
}

impl OrderHub {
    pub fn publish(&self, order: Arc<StoredOrder>) {
        // No receivers is fine: nobody is watching.
        let _ = self.sender.send(order);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<StoredOrder>> {
        self.sender.subscribe()
    }
}

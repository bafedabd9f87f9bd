//! Wall-clock seconds for `exp`, `nbf` and the token cache, which tests can
//! move forward without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::claims::unix_secs;

#[derive(Clone, Debug, Default)]
pub(crate) struct Clock {
    /// Seconds added to the system time; only tests change it.
    ahead: Arc<AtomicU64>,
}

impl Clock {
    pub(crate) fn now(&self) -> u64 {
        unix_secs(SystemTime::now()).saturating_add(self.ahead.load(Ordering::Relaxed))
    }

    #[cfg(test)]
    pub(crate) fn advance(&self, secs: u64) {
        self.ahead.fetch_add(secs, Ordering::Relaxed);
    }
}

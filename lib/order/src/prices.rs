//! Unit prices the inventory quoted, remembered for a moment.
//!
//! Every CreateOrder prices its lines before anything is stored, and most
//! orders name products priced a moment earlier: each quote remembered is
//! one ListProducts call fewer per order (and, on PostgreSQL, one
//! transaction fewer). Only products the inventory answered for are
//! remembered, so an unknown product always goes to the inventory and is
//! refused (NOT_FOUND) before an order is stored; a price changed at the
//! inventory is seen within the time to live. Zero turns remembering off.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::peers::Quote;

/// Products remembered at most: the catalog's size in any real shop; past
/// it, what has expired goes first, then everything.
const MAX_REMEMBERED: usize = 10_000;

#[derive(Debug)]
pub struct PriceBook {
    time_to_live: Duration,
    quotes: Mutex<HashMap<String, (Quote, Instant)>>,
}

impl PriceBook {
    pub fn new(time_to_live: Duration) -> Self {
        Self {
            time_to_live,
            quotes: Mutex::default(),
        }
    }

    /// The quotes of every one of `product_ids`, if each was remembered
    /// less than the time to live before `now`; else `None`.
    pub fn fresh(&self, product_ids: &[String], now: Instant) -> Option<Vec<Quote>> {
        if self.time_to_live.is_zero() {
            return None;
        }
        let quotes = self.lock();
        product_ids
            .iter()
            .map(|id| match quotes.get(id) {
                Some((quote, at)) if now.saturating_duration_since(*at) < self.time_to_live => {
                    Some(quote.clone())
                }
                _ => None,
            })
            .collect()
    }

    /// Remembers `quotes`, as the inventory gave them at `now`.
    pub fn remember(&self, quotes: &[Quote], now: Instant) {
        if self.time_to_live.is_zero() || quotes.is_empty() {
            return;
        }
        let mut remembered = self.lock();
        if remembered.len() + quotes.len() > MAX_REMEMBERED {
            remembered.retain(|_, (_, at)| now.saturating_duration_since(*at) < self.time_to_live);
            if remembered.len() + quotes.len() > MAX_REMEMBERED {
                remembered.clear();
            }
        }
        for quote in quotes.iter().take(MAX_REMEMBERED) {
            remembered.insert(quote.product_id.clone(), (quote.clone(), now));
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Quote, Instant)>> {
        self.quotes.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use ordermesh_domain::Money;
    use ordermesh_domain::money::Currency;

    use super::*;

    fn quote(id: &str, units: i64) -> Quote {
        Quote {
            product_id: id.to_owned(),
            unit_price: Money::new(Currency::parse("USD").unwrap(), units),
        }
    }

    fn ids(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn remembered_prices_answer_until_they_expire() {
        let book = PriceBook::new(Duration::from_secs(1));
        let start = Instant::now();
        assert!(
            book.fresh(&ids(&["mug"]), start).is_none(),
            "nothing remembered yet"
        );
        book.remember(&[quote("mug", 1200), quote("tee", 2500)], start);
        let fresh = book.fresh(&ids(&["tee", "mug"]), start + Duration::from_millis(900));
        let prices: Vec<i64> = fresh
            .unwrap()
            .iter()
            .map(|q| q.unit_price.minor_units)
            .collect();
        assert_eq!(prices, [2500, 1200], "in the order asked");
        assert!(
            book.fresh(&ids(&["mug"]), start + Duration::from_secs(1))
                .is_none(),
            "expired"
        );
    }

    #[test]
    fn one_unknown_product_sends_the_whole_order_to_the_inventory() {
        let book = PriceBook::new(Duration::from_secs(60));
        let now = Instant::now();
        book.remember(&[quote("mug", 1200)], now);
        assert!(book.fresh(&ids(&["mug", "no-such-product"]), now).is_none());
    }

    #[test]
    fn zero_remembers_nothing_and_the_book_stays_bounded() {
        let off = PriceBook::new(Duration::ZERO);
        let now = Instant::now();
        off.remember(&[quote("mug", 1200)], now);
        assert!(off.fresh(&ids(&["mug"]), now).is_none());

        let book = PriceBook::new(Duration::from_secs(60));
        for batch in 0..3 {
            let quotes: Vec<Quote> = (0..MAX_REMEMBERED / 2)
                .map(|i| quote(&format!("p{batch}-{i}"), 1))
                .collect();
            book.remember(&quotes, now);
            assert!(book.lock().len() <= MAX_REMEMBERED);
        }
    }
}

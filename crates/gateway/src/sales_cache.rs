//! Local knowledge of sales, so the stampede is mostly answered without a network hop.
//!
//! Sale metadata (price, window, per-user limit) never changes after creation and is cached
//! for a minute; "no such sale" is cached for `missing_sale_cache_ms` (cache-penetration
//! defence: a flood of unknown ids reaches the inventory once per interval). When the inventory
//! says a sale is sold out, this gateway answers `409 sold_out` locally for `sold_out_cache_ms`,
//! then asks again — so stock given back by a cancel or an expiry becomes buyable within that
//! time. With stock events followed ([`crate::stock_events`]), a sold-out pushed by the inventory
//! holds until its restock event.

use std::{
    sync::{
        atomic::{AtomicI64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use flashsale_kernel::StockEvent;
use flashsale_proto::inventory as pb;
use moka::{future::Cache, Expiry};

use crate::error::ApiError;

/// What the buy path needs to know about a sale.
#[derive(Debug)]
pub struct SaleMeta {
    /// Id.
    pub id: i64,
    /// Per-user limit.
    pub per_user_limit: i64,
    /// Opening time, Unix ms.
    pub starts_at_ms: i64,
    /// Closing time, Unix ms.
    pub ends_at_ms: i64,
    sold_out_until_ms: AtomicI64,
}

impl SaleMeta {
    fn from_pb(sale: &pb::Sale) -> Self {
        Self {
            id: sale.id,
            per_user_limit: sale.per_user_limit,
            starts_at_ms: sale.starts_at_ms,
            ends_at_ms: sale.ends_at_ms,
            sold_out_until_ms: AtomicI64::new(0),
        }
    }

    /// Whether this gateway answers "sold out" for this sale from an inventory answer. When
    /// that answer is older than its interval, exactly one caller is told "no" — it asks the
    /// inventory again (a *probe*) — while every other caller keeps answering "sold out" for
    /// another `hold_ms`, until the probe's answer renews or clears the flag. Without this, every
    /// request arriving in the moment the interval ends would go to the inventory at once (a
    /// thundering herd of up to one request per open connection, five times a second).
    fn answered_sold_out(&self, now_ms: i64, hold_ms: i64) -> bool {
        let until = self.sold_out_until_ms.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if until > now_ms {
            return true;
        }
        // The interval is over: the caller that moves the deadline is the probe.
        self.sold_out_until_ms
            .compare_exchange(
                until,
                now_ms.saturating_add(hold_ms),
                Ordering::Relaxed,
                Ordering::Relaxed,
            )
            .is_err()
    }
}

/// How long a known sale's metadata is kept.
const KNOWN_SALE_TTL: Duration = Duration::from_secs(60);

struct PerEntry {
    missing: Duration,
}

impl Expiry<i64, Option<Arc<SaleMeta>>> for PerEntry {
    fn expire_after_create(
        &self,
        _: &i64,
        value: &Option<Arc<SaleMeta>>,
        _: Instant,
    ) -> Option<Duration> {
        Some(if value.is_some() {
            KNOWN_SALE_TTL
        } else {
            self.missing
        })
    }
}

/// The gateway's sale cache.
#[derive(Clone)]
pub struct SaleCache {
    cache: Cache<i64, Option<Arc<SaleMeta>>, foldhash::quality::RandomState>,
    sold_out_ms: i64,
    /// Sales the inventory's stock events say are sold out (until their restock event, or
    /// until not pushed for `gateway.pushed_sold_out_ms`).
    pushed_sold_out: moka::sync::Cache<i64, (), foldhash::quality::RandomState>,
}

impl std::fmt::Debug for SaleCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SaleCache").finish_non_exhaustive()
    }
}

impl SaleCache {
    /// A cache with the given negative-cache and sold-out intervals; `pushed_sold_out` is how
    /// long a sold-out pushed by a stock event is believed unless pushed again.
    pub fn new(missing: Duration, sold_out: Duration, pushed_sold_out: Duration) -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(100_000)
                .expire_after(PerEntry { missing })
                .build_with_hasher(foldhash::quality::RandomState::default()),
            sold_out_ms: flashsale_kernel::duration::as_ms_i64(sold_out),
            // Bounded in time too: a restock event may be lost without the subscription
            // noticing; then the gateway asks the inventory again after this long.
            pushed_sold_out: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(pushed_sold_out)
                .build_with_hasher(foldhash::quality::RandomState::default()),
        }
    }

    /// Whether the sale (or its absence) is known without asking the inventory.
    pub fn is_cached(&self, id: i64) -> bool {
        self.cache.contains_key(&id)
    }

    /// The sale, from the cache or else from `fetch` (the inventory's answer, `None` when the
    /// sale does not exist), which concurrent lookups of the same sale share.
    pub async fn get_or_fetch(
        &self,
        id: i64,
        fetch: impl std::future::Future<Output = Result<Option<pb::Sale>, ApiError>>,
    ) -> Result<Option<Arc<SaleMeta>>, ApiError> {
        self.cache
            .try_get_with(id, async {
                let sale = fetch.await?;
                Ok::<_, ApiError>(sale.as_ref().map(|s| Arc::new(SaleMeta::from_pb(s))))
            })
            .await
            .map_err(|e| (*e).clone())
    }

    /// Remembers a sale just created or read.
    pub async fn remember(&self, sale: &pb::Sale) {
        if self.cache.get(&sale.id).await.flatten().is_none() {
            self.cache
                .insert(sale.id, Some(Arc::new(SaleMeta::from_pb(sale))))
                .await;
        }
    }

    /// Remembers that a sale does not exist.
    pub async fn remember_missing(&self, id: i64) {
        self.cache.insert(id, None).await;
    }

    /// Applies a stock event pushed by the inventory.
    pub async fn apply(&self, event: StockEvent) {
        match event {
            StockEvent::SoldOut(id) => self.pushed_sold_out.insert(id, ()),
            StockEvent::Restocked(id) => {
                self.pushed_sold_out.invalidate(&id);
                if let Some(Some(sale)) = self.cache.get(&id).await {
                    sale.sold_out_until_ms.store(0, Ordering::Relaxed);
                }
            }
        }
    }

    /// Forgets every pushed sold-out (the event stream was interrupted).
    pub fn forget_pushed(&self) {
        self.pushed_sold_out.invalidate_all();
    }

    /// Whether this gateway knows the sale to be sold out: pushed by a stock event, or
    /// answered by the inventory less than `sold_out_cache_ms` ago. Once that interval is over,
    /// one caller gets `false` and should ask the inventory (its answer goes to
    /// [`SaleCache::mark_sold_out`] or [`SaleCache::clear_sold_out`]); the others still get `true`
    /// meanwhile, for at most another interval.
    pub fn known_sold_out(&self, sale: &SaleMeta, now_ms: i64) -> bool {
        self.pushed_sold_out.contains_key(&sale.id)
            || sale.answered_sold_out(now_ms, self.sold_out_ms)
    }

    /// The sale's metadata when it is cached (no lookup otherwise).
    pub async fn cached(&self, id: i64) -> Option<Arc<SaleMeta>> {
        self.cache.get(&id).await.flatten()
    }

    /// Whether the sale is known sold out right now — pushed, or answered by the inventory
    /// within the interval — without taking part in the probing of [`SaleCache::known_sold_out`]:
    /// `false` once the interval is over, so the caller leaves the request to the buy flow,
    /// which probes.
    pub fn surely_sold_out(&self, sale: &SaleMeta, now_ms: i64) -> bool {
        self.pushed_sold_out.contains_key(&sale.id)
            || sale.sold_out_until_ms.load(Ordering::Relaxed) > now_ms
    }

    /// Answers "sold out" locally for the configured interval.
    pub fn mark_sold_out(&self, sale: &SaleMeta, now_ms: i64) {
        sale.sold_out_until_ms
            .store(now_ms.saturating_add(self.sold_out_ms), Ordering::Relaxed);
    }

    /// The inventory reported stock left: stop answering "sold out" from its earlier answer.
    pub fn clear_sold_out(&self, sale: &SaleMeta) {
        sale.sold_out_until_ms.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> (SaleCache, SaleMeta) {
        let cache = SaleCache::new(
            Duration::from_millis(1000),
            Duration::from_millis(200),
            Duration::from_millis(5000),
        );
        let sale = SaleMeta::from_pb(&pb::Sale {
            id: 1,
            per_user_limit: 1,
            ..Default::default()
        });
        (cache, sale)
    }

    #[test]
    fn a_stale_sold_out_answer_lets_exactly_one_probe_through() {
        let (cache, sale) = cache();
        assert!(
            !cache.known_sold_out(&sale, 1_000),
            "never answered sold out"
        );
        cache.mark_sold_out(&sale, 1_000);
        assert!(cache.known_sold_out(&sale, 1_100));
        // The interval is over: one caller probes, everyone else keeps answering locally.
        let answers: Vec<bool> = (0..50)
            .map(|_| cache.known_sold_out(&sale, 1_250))
            .collect();
        assert_eq!(answers.iter().filter(|sold_out| !**sold_out).count(), 1);
        // The probe's answer renews the flag...
        cache.mark_sold_out(&sale, 1_260);
        assert!(cache.known_sold_out(&sale, 1_300));
        // ...or clears it when stock came back.
        cache.clear_sold_out(&sale);
        assert!(!cache.known_sold_out(&sale, 1_300));
        assert!(!cache.known_sold_out(&sale, 1_300), "cleared for everyone");
    }

    #[test]
    fn a_probe_that_never_answers_is_replaced_after_the_hold() {
        let (cache, sale) = cache();
        cache.mark_sold_out(&sale, 1_000);
        assert!(!cache.known_sold_out(&sale, 1_200), "first probe");
        assert!(cache.known_sold_out(&sale, 1_300), "held while it runs");
        assert!(
            !cache.known_sold_out(&sale, 1_400),
            "a second probe once the hold is over"
        );
    }
}

//! The stock fast path: atomic reserve and idempotent release.
//!
//! [`StockStore`] is the trait every backend implements: [`MemoryStock`] in process (one
//! inventory instance), [`RedisStock`] in Redis (shared by every inventory instance; one Lua
//! script per decision). Both make the same decisions; `tests/stock_store.rs` runs one
//! conformance suite against each.
//!
//! A reservation starts *unconfirmed*: the buy flow that made it may still fail before its
//! order is queued (a timeout, a crash of the caller). The reconciler
//! ([`crate::reconcile`]) later confirms each one whose order reached the database, and
//! [`StockStore::void`]s the rest, giving their stock back; a retry of a voided order id then
//! reserves afresh. Reservations rebuilt from the database start confirmed.
//!
//! For drift repair ([`crate::drift`]) every backend also keeps, per sale, the set of its live
//! holds, so [`StockStore::audit`] can check the counters against them in one atomic step, and
//! [`StockStore::adopt`] / [`StockStore::void_absent`] put a single hold right.

mod memory;
mod redis;

pub use self::{memory::MemoryStock, redis::RedisStock};

impl crate::config::StockBackend {
    /// The stock store of this kind; the Redis one connects through `redis` (shared with the
    /// process's other Redis users).
    pub async fn open(
        self,
        redis: &flashsale_redis::SharedRedis,
    ) -> Result<std::sync::Arc<dyn StockStore>, flashsale_redis::ConnectError> {
        Ok(match self {
            Self::Memory => std::sync::Arc::new(MemoryStock::new()),
            Self::Redis => std::sync::Arc::new(RedisStock::new(redis.get().await?)),
        })
    }
}

use async_trait::async_trait;
pub use flashsale_kernel::StockEvent;

use crate::{catalog::StoredReservation, sale::Sale};

/// Order ids are UUIDs; stored as their 128-bit value.
pub type OrderKey = u128;

/// What a reserve decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// Stock was taken.
    Reserved,
    /// This order id already holds this reservation: nothing changed.
    AlreadyReserved,
    /// Not enough stock left.
    SoldOut,
    /// The buyer would exceed the per-user limit.
    LimitReached,
    /// No such sale (or the backend does not track it, or not yet completely).
    NotFound,
    /// The sale has not opened yet.
    NotStarted,
    /// The sale has closed.
    Ended,
    /// This order id holds a different reservation (another sale, user or quantity).
    Conflict,
}

/// A reserve request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveRequest {
    /// Order id the stock is held for.
    pub order: OrderKey,
    /// Sale.
    pub sale_id: i64,
    /// Buyer.
    pub user_id: i64,
    /// Units, ≥ 1.
    pub quantity: i64,
    /// Decision time, Unix ms.
    pub now_ms: i64,
}

/// A reserve decision and the stock left after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReserveDecision {
    /// What happened.
    pub outcome: ReserveOutcome,
    /// Stock left (0 for an unknown sale).
    pub remaining: i64,
}

/// A live (unreleased) hold of a sale, as the backend has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveHold {
    /// Order id.
    pub order: OrderKey,
    /// Buyer.
    pub user_id: i64,
    /// Units held.
    pub quantity: i64,
    /// Last reserve (or retry) of the order id, Unix ms; 0 for holds rebuilt from the database.
    pub touched_ms: i64,
}

/// A buyer's held-units counter that did not match the buyer's live holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldFix {
    /// Buyer.
    pub user_id: i64,
    /// Units the counter said.
    pub before: i64,
    /// Units the buyer's live holds add up to.
    pub after: i64,
}

/// What [`StockStore::audit`] found in one sale.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaleAudit {
    /// The `remaining` counter as found.
    pub remaining_before: i64,
    /// The sale's stock minus the units of its live holds (what `remaining` is set to on repair).
    pub remaining_after: i64,
    /// Buyers whose held-units counter was off.
    pub users: Vec<HeldFix>,
    /// The sale's live holds.
    pub holds: Vec<LiveHold>,
}

/// What [`StockStore::adopt`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdoptOutcome {
    /// The hold was missing (or released): it now holds its units.
    Adopted,
    /// The order id already holds exactly this (e.g. a retry reserved it meanwhile).
    AlreadyHeld,
    /// The order id holds something else (another sale, buyer or quantity): nothing changed.
    Conflict,
    /// The backend does not track the sale (completely): nothing changed.
    NotTracked,
}

/// A stock backend failed (e.g. its server is unreachable). The in-process backend never does.
#[derive(Debug, thiserror::Error)]
#[error("stock backend failed: {0}")]
pub struct StockError(#[source] pub Box<dyn std::error::Error + Send + Sync>);

impl From<::redis::RedisError> for StockError {
    fn from(e: ::redis::RedisError) -> Self {
        Self(Box::new(e))
    }
}

/// The stock fast path. Implementations make every call atomic: `reserve`, `release` and
/// `void` decide and apply in one step, so concurrent callers (in one process or, with a shared
/// backend, in several) can never sell more than the stock nor give a reservation back twice.
#[async_trait]
pub trait StockStore: Send + Sync + 'static {
    /// Starts tracking a sale from its stored reservations (those of other sales are ignored),
    /// **unless the backend already tracks it**: then nothing changes and the answer is `false`
    /// (`true` when this call built it). State shared with other inventory instances is never
    /// clobbered by one more instance starting, and of several concurrent loads of one sale
    /// exactly one builds it. The sale becomes visible to the other calls only once completely
    /// built (until then [`StockStore::reserve`] answers [`ReserveOutcome::NotFound`] and
    /// [`StockStore::remaining`] `None`); a call that finds another instance building it waits
    /// until that build is done (or takes it over if that instance died meanwhile).
    /// Stored reservations start confirmed; released ones hold no stock, nor do those whose
    /// order id was released here before (see [`StockStore::release`]).
    async fn load(
        &self,
        sale: &Sale,
        reservations: &[StoredReservation],
    ) -> Result<bool, StockError>;
    /// Decides a buy atomically: tracked sale, then an existing reservation of this order id
    /// (`AlreadyReserved`, restarting its grace period, or `Conflict`), then the window, the
    /// stock and the per-user limit; only then takes the stock.
    async fn reserve(&self, request: ReserveRequest) -> Result<ReserveDecision, StockError>;
    /// Decides several buys, in order, each exactly as [`StockStore::reserve`] would (a later
    /// request sees what an earlier one took; an order id twice is reserved once). A backend
    /// behind a network sends them in one round trip. When the backend fails, every request
    /// fails: none is answered, and a retry of each is safe (reserves are idempotent per order id).
    async fn reserve_many(
        &self,
        requests: &[ReserveRequest],
    ) -> Result<Vec<ReserveDecision>, StockError> {
        let mut decisions = Vec::with_capacity(requests.len());
        for request in requests {
            decisions.push(self.reserve(*request).await?);
        }
        Ok(decisions)
    }
    /// Gives a reservation's stock back; `true` only the first time for a held reservation.
    /// Releases are final: with no hold to give back to (the sale not rebuilt yet) the release
    /// is remembered, a later load writes the order as released, and the order id stays spent
    /// (a reserve of it answers [`ReserveOutcome::AlreadyReserved`] and takes nothing).
    async fn release(&self, order: OrderKey) -> Result<bool, StockError>;
    /// Remaining stock of a sale, `None` when unknown.
    async fn remaining(&self, sale_id: i64) -> Result<Option<i64>, StockError>;
    /// [`StockStore::remaining`] of each sale, in order (one round trip where the backend can:
    /// the sales feed reads every sale ten times a second).
    async fn remaining_many(&self, sale_ids: &[i64]) -> Result<Vec<Option<i64>>, StockError> {
        let mut all = Vec::with_capacity(sale_ids.len());
        for &sale_id in sale_ids {
            all.push(self.remaining(sale_id).await?);
        }
        Ok(all)
    }
    /// Unconfirmed, unreleased reservations last touched at or before `before_ms`.
    async fn unconfirmed(&self, before_ms: i64) -> Result<Vec<OrderKey>, StockError>;
    /// Marks reservations whose orders are known to the database as confirmed.
    async fn confirm(&self, orders: &[OrderKey]) -> Result<(), StockError>;
    /// Drops an unconfirmed reservation last touched at or before `before_ms` and gives its
    /// stock back; `false` when it was confirmed, released or touched since. A retry of the
    /// order id then reserves afresh.
    async fn void(&self, order: OrderKey, before_ms: i64) -> Result<bool, StockError>;
    /// Like [`StockStore::void`], but also drops a confirmed hold: for a hold whose order the
    /// database does not have (checked after `before_ms` plus the grace period).
    async fn void_absent(&self, order: OrderKey, before_ms: i64) -> Result<bool, StockError>;
    /// Checks a sale's counters against its live holds, atomically with respect to every other
    /// call: `remaining` must be `sale.stock` minus the units of the live holds, and each
    /// buyer's held units the sum of the buyer's live holds. With `repair` the counters are set
    /// to those values (and `sold_out` / `restocked` published when `remaining` crosses zero).
    /// `None` when the backend does not track the sale (completely).
    async fn audit(&self, sale: &Sale, repair: bool) -> Result<Option<SaleAudit>, StockError>;
    /// Makes `order` a live, confirmed hold of `quantity` units for `user_id` in the sale and
    /// takes its stock — for an order the database has that holds no stock here. An order id
    /// that holds exactly this already is left alone; a released hold is taken again (the
    /// database says the order is live).
    async fn adopt(
        &self,
        sale_id: i64,
        order: OrderKey,
        user_id: i64,
        quantity: i64,
    ) -> Result<AdoptOutcome, StockError>;
    /// The stock events from now on: [`StockEvent::SoldOut`] when a sale's remaining stock
    /// reaches 0 (and on every buy refused for want of stock), [`StockEvent::Restocked`] when it
    /// leaves 0; with a shared backend, those of every instance. At most once: the stream ends
    /// when events were lost (a slow watcher, a dropped subscription), and whoever watches
    /// must then forget what it was told.
    async fn watch(&self) -> Result<StockEvents, StockError>;
}

/// A stream of stock events ([`StockStore::watch`]).
pub type StockEvents = futures::stream::BoxStream<'static, StockEvent>;

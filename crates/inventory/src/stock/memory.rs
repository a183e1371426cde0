//! [`MemoryStock`]: the in-process backend, and the reference every other backend matches.
//!
//! It keeps, per sale, the remaining stock and each buyer's held units behind one mutex, and a
//! concurrent map of reservations by order id. A reserve takes the order id's map entry first,
//! then the sale's mutex, and decides under both: the check and the decrement cannot be
//! separated, and the same order id cannot be reserved twice. Release takes the locks in the
//! same order, so the two never deadlock. Loads are serialized by a mutex of their own, so of
//! several concurrent loads of one sale exactly one builds it; the sale enters the map (and
//! becomes visible) only once built.
//!
//! Each sale also keeps its live holds (order id → buyer and units) under its mutex, changed in
//! the same step as the counters, so an audit sees counters and holds at one instant.

use std::{collections::HashMap, sync::Arc};

use async_trait::async_trait;
use dashmap::{mapref::entry::Entry, DashMap};
use parking_lot::Mutex;

use super::{
    AdoptOutcome, HeldFix, LiveHold, OrderKey, ReserveDecision, ReserveOutcome, ReserveRequest,
    SaleAudit, StockError, StockEvent, StockEvents, StockStore,
};
use crate::{catalog::StoredReservation, sale::Sale};

#[derive(Debug)]
struct SaleStock {
    remaining: i64,
    per_user_limit: i64,
    starts_at_ms: i64,
    ends_at_ms: i64,
    held_by_user: HashMap<i64, i64>,
    /// Live holds: order id → (buyer, units).
    live: HashMap<OrderKey, (i64, i64)>,
}

impl SaleStock {
    fn take(&mut self, order: OrderKey, user_id: i64, quantity: i64) {
        self.remaining -= quantity;
        *self.held_by_user.entry(user_id).or_default() += quantity;
        self.live.insert(order, (user_id, quantity));
    }

    fn give_back(&mut self, order: OrderKey, user_id: i64, quantity: i64) {
        self.remaining += quantity;
        if let Some(units) = self.held_by_user.get_mut(&user_id) {
            *units -= quantity;
            if *units <= 0 {
                self.held_by_user.remove(&user_id);
            }
        }
        self.live.remove(&order);
    }

    /// Compares the counters with the live holds; with `repair`, sets them to match.
    fn audit(&mut self, stock: i64, repair: bool) -> SaleAudit {
        let mut per_user: HashMap<i64, i64> = HashMap::new();
        for (user_id, quantity) in self.live.values() {
            *per_user.entry(*user_id).or_default() += quantity;
        }
        let remaining_after = stock - per_user.values().sum::<i64>();
        let mut users: Vec<HeldFix> = self
            .held_by_user
            .iter()
            .filter(|(user, units)| per_user.get(user) != Some(units))
            .map(|(user, units)| HeldFix {
                user_id: *user,
                before: *units,
                after: per_user.get(user).copied().unwrap_or(0),
            })
            .chain(
                per_user
                    .iter()
                    .filter(|(user, _)| !self.held_by_user.contains_key(user))
                    .map(|(user, units)| HeldFix {
                        user_id: *user,
                        before: 0,
                        after: *units,
                    }),
            )
            .collect();
        users.sort_unstable_by_key(|f| f.user_id);
        let holds = self
            .live
            .iter()
            .map(|(order, (user_id, quantity))| LiveHold {
                order: *order,
                user_id: *user_id,
                quantity: *quantity,
                touched_ms: 0,
            })
            .collect();
        let audit = SaleAudit {
            remaining_before: self.remaining,
            remaining_after,
            users,
            holds,
        };
        if repair {
            self.remaining = remaining_after;
            per_user.retain(|_, units| *units > 0);
            self.held_by_user = per_user;
        }
        audit
    }
}

#[derive(Debug, Clone, Copy)]
struct Held {
    sale_id: i64,
    user_id: i64,
    quantity: i64,
    released: bool,
    /// Whether the order is known to be in the database.
    confirmed: bool,
    /// Last reserve (or retry) for this order id, Unix ms.
    touched_at_ms: i64,
}

impl Held {
    /// A release that found no hold (the sale not rebuilt yet): remembered so the rebuild
    /// writes the order as released. Holds no stock, names no sale.
    const RELEASED_MARKER: Self = Self {
        sale_id: 0,
        user_id: 0,
        quantity: 0,
        released: true,
        confirmed: true,
        touched_at_ms: 0,
    };

    fn is_marker(&self) -> bool {
        self.quantity == 0
    }
}

/// In-process stock: exact under any concurrency within one process.
#[derive(Debug)]
pub struct MemoryStock {
    /// Stock events for whoever watches (see [`StockStore::watch`]).
    events: tokio::sync::broadcast::Sender<StockEvent>,
    sales: DashMap<i64, Arc<Mutex<SaleStock>>>,
    holds: DashMap<OrderKey, Held>,
    /// Held while a load checks and builds a sale.
    loading: Mutex<()>,
}

/// Events a watcher may fall behind by before its stream ends (it then forgets and watches
/// again).
const EVENTS_BACKLOG: usize = 4096;

impl Default for MemoryStock {
    fn default() -> Self {
        Self {
            events: tokio::sync::broadcast::channel(EVENTS_BACKLOG).0,
            sales: DashMap::new(),
            holds: DashMap::new(),
            loading: Mutex::new(()),
        }
    }
}

impl MemoryStock {
    /// Empty stock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells the watchers (none listening is fine).
    fn publish(&self, event: StockEvent) {
        let _ = self.events.send(event);
    }

    /// Gives a hold's units back to its sale, telling the watchers when that ends a sold-out.
    fn give_back(
        &self,
        sale_id: i64,
        sale: &Mutex<SaleStock>,
        order: OrderKey,
        user_id: i64,
        quantity: i64,
    ) {
        let mut s = sale.lock();
        let was_sold_out = s.remaining <= 0;
        s.give_back(order, user_id, quantity);
        if was_sold_out && s.remaining > 0 {
            self.publish(StockEvent::Restocked(sale_id));
        }
    }
}

impl MemoryStock {
    fn load_now(&self, sale: &Sale, reservations: &[StoredReservation]) -> bool {
        let _serial = self.loading.lock();
        if self.sales.contains_key(&sale.id) {
            return false;
        }
        let mut state = SaleStock {
            remaining: sale.stock,
            per_user_limit: sale.per_user_limit,
            starts_at_ms: sale.starts_at_ms,
            ends_at_ms: sale.ends_at_ms,
            held_by_user: HashMap::new(),
            live: HashMap::new(),
        };
        for r in reservations.iter().filter(|r| r.sale_id == sale.id) {
            let Ok(order) = uuid::Uuid::parse_str(&r.order_id) else {
                tracing::warn!(order_id = %r.order_id, "stored order id is not a uuid; skipped");
                continue;
            };
            // A release that came before this rebuild stays: a release is final.
            let released =
                r.released || self.holds.get(&order.as_u128()).is_some_and(|h| h.released);
            if !released {
                state.take(order.as_u128(), r.user_id, r.quantity);
            }
            self.holds.insert(
                order.as_u128(),
                Held {
                    sale_id: r.sale_id,
                    user_id: r.user_id,
                    quantity: r.quantity,
                    released,
                    confirmed: true,
                    touched_at_ms: 0,
                },
            );
        }
        if state.remaining < 0 {
            tracing::error!(
                sale_id = sale.id,
                remaining = state.remaining,
                "stored orders exceed the stock"
            );
        }
        self.sales.insert(sale.id, Arc::new(Mutex::new(state)));
        true
    }

    fn reserve_now(&self, req: ReserveRequest) -> ReserveDecision {
        let Some(sale) = self.sales.get(&req.sale_id).map(|s| Arc::clone(s.value())) else {
            return ReserveDecision {
                outcome: ReserveOutcome::NotFound,
                remaining: 0,
            };
        };
        match self.holds.entry(req.order) {
            Entry::Occupied(mut held) => {
                let held = held.get_mut();
                // A released marker is a spent order id, like any released hold.
                let same = held.is_marker()
                    || (held.sale_id == req.sale_id
                        && held.user_id == req.user_id
                        && held.quantity == req.quantity);
                if same {
                    // A retry is about to queue the order again: restart its grace period.
                    held.touched_at_ms = req.now_ms;
                }
                ReserveDecision {
                    outcome: if same {
                        ReserveOutcome::AlreadyReserved
                    } else {
                        ReserveOutcome::Conflict
                    },
                    remaining: sale.lock().remaining,
                }
            }
            Entry::Vacant(slot) => {
                let mut s = sale.lock();
                let outcome = if req.now_ms < s.starts_at_ms {
                    ReserveOutcome::NotStarted
                } else if req.now_ms >= s.ends_at_ms {
                    ReserveOutcome::Ended
                } else if s.remaining < req.quantity {
                    if s.remaining <= 0 {
                        // Repeated on every refusal, as the Redis scripts do: a gateway whose
                        // pushed sold-out lapsed learns it again.
                        self.publish(StockEvent::SoldOut(req.sale_id));
                    }
                    ReserveOutcome::SoldOut
                } else if s.held_by_user.get(&req.user_id).copied().unwrap_or(0) + req.quantity
                    > s.per_user_limit
                {
                    ReserveOutcome::LimitReached
                } else {
                    s.take(req.order, req.user_id, req.quantity);
                    if s.remaining <= 0 {
                        self.publish(StockEvent::SoldOut(req.sale_id));
                    }
                    slot.insert(Held {
                        sale_id: req.sale_id,
                        user_id: req.user_id,
                        quantity: req.quantity,
                        released: false,
                        confirmed: false,
                        touched_at_ms: req.now_ms,
                    });
                    ReserveOutcome::Reserved
                };
                ReserveDecision {
                    outcome,
                    remaining: s.remaining,
                }
            }
        }
    }

    fn release_now(&self, order: OrderKey) -> bool {
        let mut held = match self.holds.entry(order) {
            Entry::Occupied(held) => held,
            Entry::Vacant(slot) => {
                // Nothing to give back to yet (the sale is not rebuilt): remember the release.
                slot.insert(Held::RELEASED_MARKER);
                return false;
            }
        };
        let held = held.get_mut();
        if held.released {
            return false;
        }
        held.released = true;
        let Some(sale) = self.sales.get(&held.sale_id).map(|s| Arc::clone(s.value())) else {
            return false;
        };
        self.give_back(held.sale_id, &sale, order, held.user_id, held.quantity);
        true
    }

    fn remaining_now(&self, sale_id: i64) -> Option<i64> {
        self.sales.get(&sale_id).map(|s| s.lock().remaining)
    }

    fn unconfirmed_now(&self, before_ms: i64) -> Vec<OrderKey> {
        self.holds
            .iter()
            .filter(|h| !h.confirmed && !h.released && h.touched_at_ms <= before_ms)
            .map(|h| *h.key())
            .collect()
    }

    fn confirm_now(&self, orders: &[OrderKey]) {
        for order in orders {
            if let Some(mut held) = self.holds.get_mut(order) {
                held.confirmed = true;
            }
        }
    }

    /// Drops a hold (`even_confirmed`: also a confirmed one) untouched since `before_ms`.
    fn void_now(&self, order: OrderKey, before_ms: i64, even_confirmed: bool) -> bool {
        let Entry::Occupied(held) = self.holds.entry(order) else {
            return false;
        };
        let h = *held.get();
        if (h.confirmed && !even_confirmed) || h.released || h.touched_at_ms > before_ms {
            return false;
        }
        if let Some(sale) = self.sales.get(&h.sale_id).map(|s| Arc::clone(s.value())) {
            self.give_back(h.sale_id, &sale, order, h.user_id, h.quantity);
        }
        held.remove();
        true
    }

    fn audit_now(&self, sale: &Sale, repair: bool) -> Option<SaleAudit> {
        let state = self.sales.get(&sale.id).map(|s| Arc::clone(s.value()))?;
        let mut audit = {
            let mut s = state.lock();
            let was_sold_out = s.remaining <= 0;
            let audit = s.audit(sale.stock, repair);
            match (was_sold_out, s.remaining <= 0) {
                (true, false) => self.publish(StockEvent::Restocked(sale.id)),
                (false, true) => self.publish(StockEvent::SoldOut(sale.id)),
                _ => {}
            }
            audit
        };
        // Outside the sale's lock (reserves take a hold entry, then the sale): the touch time
        // only tells the caller which holds are old enough to void, and voiding checks again.
        for hold in &mut audit.holds {
            hold.touched_ms = self.holds.get(&hold.order).map_or(0, |h| h.touched_at_ms);
        }
        Some(audit)
    }

    fn adopt_now(
        &self,
        sale_id: i64,
        order: OrderKey,
        user_id: i64,
        quantity: i64,
    ) -> AdoptOutcome {
        let Some(sale) = self.sales.get(&sale_id).map(|s| Arc::clone(s.value())) else {
            return AdoptOutcome::NotTracked;
        };
        let adopted = Held {
            sale_id,
            user_id,
            quantity,
            released: false,
            confirmed: true,
            touched_at_ms: 0,
        };
        match self.holds.entry(order) {
            Entry::Occupied(mut held) => {
                let h = *held.get();
                if !h.released {
                    return if h.sale_id == sale_id && h.user_id == user_id && h.quantity == quantity
                    {
                        AdoptOutcome::AlreadyHeld
                    } else {
                        AdoptOutcome::Conflict
                    };
                }
                sale.lock().take(order, user_id, quantity);
                held.insert(adopted);
            }
            Entry::Vacant(slot) => {
                sale.lock().take(order, user_id, quantity);
                slot.insert(adopted);
            }
        }
        AdoptOutcome::Adopted
    }

    /// Test support: moves a sale's counters away from its holds (drift to repair).
    #[cfg(feature = "testing")]
    pub fn inject_drift(&self, sale_id: i64, remaining_delta: i64, user_id: i64, held_delta: i64) {
        if let Some(sale) = self.sales.get(&sale_id) {
            let mut s = sale.lock();
            s.remaining += remaining_delta;
            *s.held_by_user.entry(user_id).or_default() += held_delta;
        }
    }
}

#[async_trait]
impl StockStore for MemoryStock {
    async fn watch(&self) -> Result<StockEvents, StockError> {
        let receiver = self.events.subscribe();
        // Ends at the first lag: the watcher missed events and must forget what it knows.
        Ok(Box::pin(futures::stream::unfold(
            receiver,
            |mut receiver| async move { receiver.recv().await.ok().map(|event| (event, receiver)) },
        )))
    }

    async fn load(
        &self,
        sale: &Sale,
        reservations: &[StoredReservation],
    ) -> Result<bool, StockError> {
        Ok(self.load_now(sale, reservations))
    }

    async fn reserve(&self, request: ReserveRequest) -> Result<ReserveDecision, StockError> {
        Ok(self.reserve_now(request))
    }

    async fn release(&self, order: OrderKey) -> Result<bool, StockError> {
        Ok(self.release_now(order))
    }

    async fn remaining(&self, sale_id: i64) -> Result<Option<i64>, StockError> {
        Ok(self.remaining_now(sale_id))
    }

    async fn unconfirmed(&self, before_ms: i64) -> Result<Vec<OrderKey>, StockError> {
        Ok(self.unconfirmed_now(before_ms))
    }

    async fn confirm(&self, orders: &[OrderKey]) -> Result<(), StockError> {
        self.confirm_now(orders);
        Ok(())
    }

    async fn void(&self, order: OrderKey, before_ms: i64) -> Result<bool, StockError> {
        Ok(self.void_now(order, before_ms, false))
    }

    async fn void_absent(&self, order: OrderKey, before_ms: i64) -> Result<bool, StockError> {
        Ok(self.void_now(order, before_ms, true))
    }

    async fn audit(&self, sale: &Sale, repair: bool) -> Result<Option<SaleAudit>, StockError> {
        Ok(self.audit_now(sale, repair))
    }

    async fn adopt(
        &self,
        sale_id: i64,
        order: OrderKey,
        user_id: i64,
        quantity: i64,
    ) -> Result<AdoptOutcome, StockError> {
        Ok(self.adopt_now(sale_id, order, user_id, quantity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sale(stock: i64, limit: i64) -> Sale {
        Sale {
            id: 1,
            name: "x".into(),
            price_cents: 1,
            stock,
            per_user_limit: limit,
            starts_at_ms: 100,
            ends_at_ms: 200,
        }
    }

    fn req(order: u128, user_id: i64, quantity: i64) -> ReserveRequest {
        ReserveRequest {
            order,
            sale_id: 1,
            user_id,
            quantity,
            now_ms: 150,
        }
    }

    #[tokio::test]
    async fn enforces_window_stock_and_limit() {
        let stock = MemoryStock::new();
        stock.load(&sale(3, 2), &[]).await.unwrap();
        let early = ReserveRequest {
            now_ms: 99,
            ..req(1, 1, 1)
        };
        assert_eq!(
            stock.reserve(early).await.unwrap().outcome,
            ReserveOutcome::NotStarted
        );
        let late = ReserveRequest {
            now_ms: 200,
            ..req(1, 1, 1)
        };
        assert_eq!(
            stock.reserve(late).await.unwrap().outcome,
            ReserveOutcome::Ended
        );
        assert_eq!(
            stock.reserve(req(1, 1, 2)).await.unwrap().outcome,
            ReserveOutcome::Reserved
        );
        assert_eq!(
            stock.reserve(req(2, 1, 1)).await.unwrap().outcome,
            ReserveOutcome::LimitReached
        );
        assert_eq!(
            stock.reserve(req(3, 2, 2)).await.unwrap().outcome,
            ReserveOutcome::SoldOut
        );
        let last = stock.reserve(req(4, 2, 1)).await.unwrap();
        assert_eq!(
            (last.outcome, last.remaining),
            (ReserveOutcome::Reserved, 0)
        );
        let unknown = ReserveRequest {
            sale_id: 9,
            ..req(5, 1, 1)
        };
        assert_eq!(
            stock.reserve(unknown).await.unwrap().outcome,
            ReserveOutcome::NotFound
        );
    }

    #[tokio::test]
    async fn same_order_id_reserves_once_and_releases_once() {
        let stock = MemoryStock::new();
        stock.load(&sale(5, 5), &[]).await.unwrap();
        assert_eq!(
            stock.reserve(req(1, 1, 2)).await.unwrap().outcome,
            ReserveOutcome::Reserved
        );
        assert_eq!(
            stock.reserve(req(1, 1, 2)).await.unwrap().outcome,
            ReserveOutcome::AlreadyReserved
        );
        assert_eq!(
            stock.reserve(req(1, 1, 3)).await.unwrap().outcome,
            ReserveOutcome::Conflict
        );
        assert_eq!(stock.remaining(1).await.unwrap(), Some(3));
        assert!(stock.release(1).await.unwrap());
        assert!(!stock.release(1).await.unwrap());
        assert_eq!(stock.remaining(1).await.unwrap(), Some(5));
        // A released order id stays spent: a replay does not take stock again.
        assert_eq!(
            stock.reserve(req(1, 1, 2)).await.unwrap().outcome,
            ReserveOutcome::AlreadyReserved
        );
        assert_eq!(stock.remaining(1).await.unwrap(), Some(5));
        assert!(!stock.release(42).await.unwrap());
    }

    #[tokio::test]
    async fn unconfirmed_reservations_can_be_voided_once_and_retried() {
        let stock = MemoryStock::new();
        stock.load(&sale(2, 2), &[]).await.unwrap();
        assert_eq!(
            stock.reserve(req(1, 1, 1)).await.unwrap().outcome,
            ReserveOutcome::Reserved
        );
        assert_eq!(
            stock.reserve(req(2, 2, 1)).await.unwrap().outcome,
            ReserveOutcome::Reserved
        );
        assert_eq!(stock.unconfirmed(149).await.unwrap(), Vec::<u128>::new());
        let mut due = stock.unconfirmed(150).await.unwrap();
        due.sort_unstable();
        assert_eq!(due, vec![1, 2]);
        stock.confirm(&[2]).await.unwrap();
        assert_eq!(stock.unconfirmed(150).await.unwrap(), vec![1]);
        // Touched after the cutoff: kept.
        assert!(!stock.void(1, 149).await.unwrap());
        assert!(
            !stock.void(2, 150).await.unwrap(),
            "confirmed reservations are never voided"
        );
        assert!(stock.void(1, 150).await.unwrap());
        assert!(!stock.void(1, 150).await.unwrap());
        assert_eq!(stock.remaining(1).await.unwrap(), Some(1));
        // A retry of the voided order id reserves afresh.
        assert_eq!(
            stock.reserve(req(1, 1, 1)).await.unwrap().outcome,
            ReserveOutcome::Reserved
        );
        assert_eq!(stock.remaining(1).await.unwrap(), Some(0));
    }

    #[tokio::test]
    async fn a_retry_restarts_the_grace_period() {
        let stock = MemoryStock::new();
        stock.load(&sale(2, 2), &[]).await.unwrap();
        assert_eq!(
            stock.reserve(req(1, 1, 1)).await.unwrap().outcome,
            ReserveOutcome::Reserved
        );
        let retry = ReserveRequest {
            now_ms: 190,
            ..req(1, 1, 1)
        };
        assert_eq!(
            stock.reserve(retry).await.unwrap().outcome,
            ReserveOutcome::AlreadyReserved
        );
        assert!(!stock.void(1, 180).await.unwrap());
        assert!(stock.void(1, 190).await.unwrap());
    }

    #[tokio::test]
    async fn rebuild_counts_live_reservations_only() {
        let stock = MemoryStock::new();
        let id = |n: u128| uuid::Uuid::from_u128(n).to_string();
        let stored = [
            StoredReservation {
                order_id: id(1),
                sale_id: 1,
                user_id: 1,
                quantity: 2,
                released: false,
            },
            StoredReservation {
                order_id: id(2),
                sale_id: 1,
                user_id: 2,
                quantity: 1,
                released: true,
            },
            StoredReservation {
                order_id: id(3),
                sale_id: 2,
                user_id: 2,
                quantity: 1,
                released: false,
            },
        ];
        stock.load(&sale(5, 2), &stored).await.unwrap();
        assert_eq!(stock.remaining(1).await.unwrap(), Some(3));
        assert_eq!(
            stock.reserve(req(9, 1, 1)).await.unwrap().outcome,
            ReserveOutcome::LimitReached
        );
        assert_eq!(
            stock.reserve(req(2, 2, 1)).await.unwrap().outcome,
            ReserveOutcome::AlreadyReserved
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_tracked_sale_is_not_loaded_again() {
        let stock = MemoryStock::new();
        assert!(stock.load(&sale(5, 2), &[]).await.unwrap());
        assert_eq!(
            stock.reserve(req(1, 1, 2)).await.unwrap().outcome,
            ReserveOutcome::Reserved
        );
        assert!(!stock.load(&sale(9, 2), &[]).await.unwrap());
        assert_eq!(stock.remaining(1).await.unwrap(), Some(3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn never_oversells_under_concurrent_tasks() {
        let stock = Arc::new(MemoryStock::new());
        stock.load(&sale(100, 1), &[]).await.unwrap();
        let handles: Vec<_> = (0..4000_i64)
            .map(|user| {
                let stock = Arc::clone(&stock);
                tokio::spawn(async move {
                    let order = u128::try_from(user).unwrap_or_default();
                    stock.reserve(req(order, user, 1)).await.unwrap().outcome
                        == ReserveOutcome::Reserved
                })
            })
            .collect();
        let mut sold = 0;
        for h in handles {
            sold += usize::from(h.await.unwrap());
        }
        assert_eq!(sold, 100);
        assert_eq!(stock.remaining(1).await.unwrap(), Some(0));
    }
}

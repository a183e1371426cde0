//! Drift repair (`flashsale inventory reconcile`): compares the stock backend with the database
//! and puts the backend right, reporting what it changed per sale.
//!
//! The database is the truth: a sale holds the units of its live orders and queued order
//! requests ([`Catalog::load_reservations`]); the backend's `remaining` must be the stock minus
//! the units of its live holds, and each buyer's held units the sum of theirs. [`reconcile`]
//! works in this order, which keeps it safe in the middle of a rush:
//!
//! 1. **Audit** each sale ([`StockStore::audit`]): one atomic step compares the counters with the
//!    sale's live holds and (unless `dry_run`) sets them to match. Buys before or after it are
//!    counted alike, so a repaired counter never hands out a unit a hold still has.
//! 2. **Read the database**, once, *after* the audits, with `cutoff = now − grace` taken first.
//! 3. **Compare hold by hold**, each repair one atomic step that checks its premise again:
//!    * an order live in the database without a live hold is **adopted** (its units taken;
//!      a retry that reserved it meanwhile makes this a no-op);
//!    * a hold whose order was cancelled or expired is **released** (cancel and expiry are final
//!      in the database before the order service releases, so this is always right);
//!    * a hold whose order the database does not have is **voided** only if untouched since
//!      `cutoff`: by the rule that makes the background reconciler safe
//!      ([`crate::reconcile`]), its order can no longer reach the journal. Younger ones are
//!      buys in flight, left alone and counted as `in_flight`;
//!    * a hold that disagrees with its order (another buyer, quantity or sale) is reported as a
//!      conflict and left for a human.
//!
//! Because the database is read after the audit, a hold missing at the audit but reserved by a
//! retry before the database read is found by the adopt (no double count), and a hold released at
//! the audit whose order is live in the database was released wrongly (the database cancels
//! first), so taking it again is right.

use std::collections::HashMap;

use crate::{
    catalog::{Catalog, StoredReservation},
    reconcile::ReconcileError,
    sale::Sale,
    stock::{AdoptOutcome, HeldFix, LiveHold, OrderKey, StockError, StockStore},
};

/// What reconciling one sale found and (unless a dry run) changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaleDrift {
    /// Sale.
    pub sale_id: i64,
    /// False when the backend does not track the sale right now (it is being built or
    /// rebuilt): nothing was compared.
    pub tracked: bool,
    /// `remaining` as found.
    pub remaining_before: i64,
    /// `remaining` after this run's changes (a dry run: after the changes it would make).
    /// Buys made meanwhile are not included.
    pub remaining_after: i64,
    /// Orders live in the database that held no stock, now holding it.
    pub adopted: usize,
    /// Holds of cancelled or expired orders, given back.
    pub released: usize,
    /// Holds older than the grace period whose order the database does not have, given back.
    pub voided: usize,
    /// Buyers whose held-units counter was off.
    pub users_fixed: Vec<HeldFix>,
    /// Holds without an order in the database yet, younger than the grace period: left alone.
    pub in_flight: usize,
    /// Holds that disagree with their order (buyer, quantity or sale): reported, not changed.
    pub conflicts: usize,
}

impl SaleDrift {
    /// Whether anything differed from the database (in-flight holds do not count).
    pub fn drifted(&self) -> bool {
        self.remaining_before != self.remaining_after
            || self.adopted > 0
            || self.released > 0
            || self.voided > 0
            || !self.users_fixed.is_empty()
            || self.conflicts > 0
    }
}

/// Reconciles `sales` (see the module docs); with `dry_run` nothing changes and the report says
/// what would. `grace` is the reservation grace period.
pub async fn reconcile(
    catalog: &dyn Catalog,
    stock: &dyn StockStore,
    sales: &[Sale],
    grace: std::time::Duration,
    dry_run: bool,
) -> Result<Vec<SaleDrift>, ReconcileError> {
    let mut audits = Vec::with_capacity(sales.len());
    for sale in sales {
        audits.push((sale, stock.audit(sale, !dry_run).await?));
    }
    let cutoff =
        flashsale_storage::now_ms().saturating_sub(flashsale_kernel::duration::as_ms_i64(grace));
    let stored: HashMap<OrderKey, StoredReservation> = catalog
        .load_reservations()
        .await?
        .into_iter()
        .filter_map(|r| match uuid::Uuid::parse_str(&r.order_id) {
            Ok(order) => Some((order.as_u128(), r)),
            Err(_) => {
                tracing::warn!(order_id = %r.order_id, "stored order id is not a uuid; skipped");
                None
            }
        })
        .collect();
    let mut reports = Vec::with_capacity(audits.len());
    for (sale, audit) in audits {
        let Some(audit) = audit else {
            reports.push(SaleDrift {
                sale_id: sale.id,
                ..SaleDrift::default()
            });
            continue;
        };
        let mut report = SaleDrift {
            sale_id: sale.id,
            tracked: true,
            remaining_before: audit.remaining_before,
            remaining_after: audit.remaining_after,
            users_fixed: audit.users,
            ..SaleDrift::default()
        };
        let holds: HashMap<OrderKey, LiveHold> =
            audit.holds.into_iter().map(|h| (h.order, h)).collect();
        let actions = Actions {
            stock,
            sale_id: sale.id,
            cutoff,
            dry_run,
        };
        for (order, r) in stored.iter().filter(|(_, r)| r.sale_id == sale.id) {
            match (holds.get(order), r.released) {
                (Some(h), false) if h.user_id != r.user_id || h.quantity != r.quantity => {
                    report.conflicts += 1;
                }
                (Some(_), false) | (None, true) => {}
                (None, false) => match actions.adopt(*order, r).await? {
                    AdoptOutcome::Adopted => {
                        report.adopted += 1;
                        report.remaining_after -= r.quantity;
                    }
                    AdoptOutcome::Conflict => report.conflicts += 1,
                    AdoptOutcome::AlreadyHeld | AdoptOutcome::NotTracked => {}
                },
                (Some(h), true) => {
                    if actions.release(*order).await? {
                        report.released += 1;
                        report.remaining_after += h.quantity;
                    }
                }
            }
        }
        for hold in holds.values() {
            match stored.get(&hold.order) {
                Some(r) if r.sale_id == sale.id => {}
                Some(_) => report.conflicts += 1,
                None if hold.touched_ms > cutoff => report.in_flight += 1,
                None => {
                    if actions.void(hold).await? {
                        report.voided += 1;
                        report.remaining_after += hold.quantity;
                    }
                }
            }
        }
        if report.drifted() {
            tracing::warn!(
                sale_id = sale.id,
                dry_run,
                remaining_before = report.remaining_before,
                remaining_after = report.remaining_after,
                adopted = report.adopted,
                released = report.released,
                voided = report.voided,
                users_fixed = report.users_fixed.len(),
                conflicts = report.conflicts,
                "stock drifted from the database"
            );
        }
        reports.push(report);
    }
    Ok(reports)
}

/// The per-hold repairs, or (dry run) what they would do.
struct Actions<'a> {
    stock: &'a dyn StockStore,
    sale_id: i64,
    cutoff: i64,
    dry_run: bool,
}

impl Actions<'_> {
    async fn adopt(
        &self,
        order: OrderKey,
        r: &StoredReservation,
    ) -> Result<AdoptOutcome, StockError> {
        if self.dry_run {
            return Ok(AdoptOutcome::Adopted);
        }
        self.stock
            .adopt(self.sale_id, order, r.user_id, r.quantity)
            .await
    }

    async fn release(&self, order: OrderKey) -> Result<bool, StockError> {
        if self.dry_run {
            return Ok(true);
        }
        self.stock.release(order).await
    }

    async fn void(&self, hold: &LiveHold) -> Result<bool, StockError> {
        if self.dry_run {
            return Ok(true);
        }
        self.stock.void_absent(hold.order, self.cutoff).await
    }
}

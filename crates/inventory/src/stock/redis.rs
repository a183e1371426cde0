//! [`RedisStock`]: the stock in Redis, shared by every inventory instance, so several instances
//! sell one stock and never more than it.
//!
//! Key layout, under the deployment's key prefix ([`flashsale_redis::Redis::key`]); order ids
//! are written as 32 lowercase hex digits (`{order}`):
//!
//! | key                       | type   | holds                                                     |
//! |---------------------------|--------|-----------------------------------------------------------|
//! | `stock:sale:{id}`         | hash   | `remaining`, `limit`, `starts`, `ends` (Unix ms), `gen`, `ready` (`1` once built), `layout` (`2`: has the `holds` set) |
//! | `stock:sale:{id}:held`    | hash   | user id → units the user holds in the sale                |
//! | `stock:sale:{id}:holds`   | set    | `{order}` of the sale's live holds (for [`StockStore::audit`]) |
//! | `stock:sale:{id}:loading` | string | `gen` of the load building the sale; expires (lease)      |
//! | `stock:hold:{order}`      | hash   | `sale`, `user`, `qty`, `released`, `confirmed` (`0`/`1`), `touched` (Unix ms), `gen` |
//! | `stock:unconfirmed`       | zset   | `{order}` of unconfirmed, unreleased holds, scored by `touched` |
//! | `stock:generation`        | string | last build generation handed out (INCR)                   |
//! | `stock:events`            | channel | `sold_out:{id}` when a reserve takes the last unit, `restocked:{id}` when a release or void gives the first one back (`flashsale_redis::events`) |
//!
//! Every decision is one Lua script ([`redis::Script`]: EVALSHA, falling back to EVAL after a
//! Redis restart forgot the script), each in its own file in `redis/` (compiled in with
//! `include_str!`; each file's header says what it does, its KEYS and ARGV and its reply).
//! Scripts answer with named outcome codes defined once in Rust ([`codes`]): each script runs
//! after a `local NAME = code` preamble built from them. A script is atomic however many
//! instances call at once: a reserve checks and decrements in one step and decides before it
//! decrements, so `remaining` never goes below zero. `remaining` and `unconfirmed` are one
//! command each. Release and void find the sale through the hold, so those two scripts build
//! the sale's key from the prefix: the layout assumes one Redis server (not Redis Cluster).
//!
//! **Loading.** A sale is built at most once while Redis keeps it: the first load claims it
//! (writes the sale hash without `ready`, and a `loading` lease), writes the stored reservations
//! in chunks of [`LOAD_CHUNK`], each renewing the lease, and sets `ready` last. Reserves see the
//! sale only once `ready` is set (before, `NotFound`); a load finding the sale ready does
//! nothing; one finding another build in progress waits for it, and takes the sale over (starts
//! afresh) if the lease ran out because that instance died.
//!
//! **Generations.** Each build gets a new `gen`, and holds carry the `gen` of the build they
//! belong to. A hold left from an earlier build (Redis lost the sale but kept the hold, e.g.
//! after an eviction) is not part of the rebuilt counters: it never gives stock back to them, and
//! a reserve of its order id treats it as absent. A *release* is the exception: a release
//! that finds no hold of the current build (the sale was lost, or is being rebuilt) marks the
//! hold key released, and the rebuild writes that order as released — the order is cancelled
//! or expired in the database, which the rebuild's earlier read may not show yet.
//!
//! **Auditing.** Every script that takes or gives back stock also adds the order to or removes
//! it from the sale's `holds` set, so the audit script can add up the live holds and compare
//! them with `remaining` and `held` in one atomic step. A sale built before the set existed
//! (no `layout`) is refused by the audit rather than "repaired" to full stock.
//!
//! Lua numbers are doubles: stock counts and Unix-ms times are exact (below 2^53); counters are
//! changed with HINCRBY and computed numbers written with `%.0f`, never in exponent form.

use std::{sync::Arc, time::Duration};

use ::redis::aio::ConnectionManager;
use async_trait::async_trait;
use flashsale_redis::Redis;
use futures::StreamExt;

use self::{
    codes::{
        AdoptCode, AuditCode, ClaimCode, Code as _, LoadStepCode, ReleaseCode, ReserveCode,
        VoidCode,
    },
    scripts::{decision, Scripts},
};
use super::{
    AdoptOutcome, HeldFix, LiveHold, OrderKey, ReserveDecision, ReserveRequest, SaleAudit,
    StockError, StockEvents, StockStore,
};
use crate::{catalog::StoredReservation, sale::Sale};

mod codes;
mod scripts;

/// Stored reservations written per load round trip.
const LOAD_CHUNK: usize = 1_000;

/// How long a load's claim lasts without progress before another instance may take it over.
const LOAD_LEASE: Duration = Duration::from_secs(30);

/// How often a load waiting for another instance's build looks again.
const LOAD_POLL: Duration = Duration::from_millis(20);

/// Orders confirmed per script (several scripts go in one pipeline).
const CONFIRM_CHUNK: usize = 500;

/// Full keys (and key prefixes) that do not depend on a sale or an order.
#[derive(Debug)]
struct Keys {
    unconfirmed: String,
    /// Channel of [`flashsale_redis::events::StockEvent`]s.
    events: String,
    generation: String,
    /// `stock:sale:` under the prefix; a sale's key is this plus its id.
    sale_prefix: String,
    /// `stock:hold:` under the prefix; a hold's key is this plus its `{order}`.
    hold_prefix: String,
}

/// Stock in Redis (see the module docs for the key layout), exact under any concurrency across
/// any number of instances sharing the server and prefix.
///
/// Cheap to clone: clones share one multiplexed connection.
#[derive(Clone)]
pub struct RedisStock {
    redis: Redis,
    scripts: Arc<Scripts>,
    keys: Arc<Keys>,
}

impl std::fmt::Debug for RedisStock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStock")
            .field("prefix", &self.redis.prefix())
            .finish_non_exhaustive()
    }
}

/// An order id as written in Redis: 32 lowercase hex digits.
fn order_hex(order: OrderKey) -> String {
    format!("{order:032x}")
}

/// A lost load claim (another instance took a stalled build over).
fn claim_lost(sale_id: i64) -> StockError {
    StockError(format!("load of sale {sale_id} lost its claim to another instance").into())
}

impl RedisStock {
    /// Stock over `redis`, its keys under the handle's prefix. Inventory instances given the
    /// same server and prefix share one stock.
    pub fn new(redis: Redis) -> Self {
        Self {
            keys: Arc::new(Keys {
                unconfirmed: redis.key("stock:unconfirmed"),
                events: redis.key(flashsale_redis::events::STOCK_EVENTS),
                generation: redis.key("stock:generation"),
                sale_prefix: redis.key("stock:sale:"),
                hold_prefix: redis.key("stock:hold:"),
            }),
            scripts: Arc::new(Scripts::new()),
            redis,
        }
    }

    fn sale_key(&self, sale_id: i64) -> String {
        format!("{}{sale_id}", self.keys.sale_prefix)
    }

    fn held_key(&self, sale_id: i64) -> String {
        format!("{}{sale_id}:held", self.keys.sale_prefix)
    }

    fn loading_key(&self, sale_id: i64) -> String {
        format!("{}{sale_id}:loading", self.keys.sale_prefix)
    }

    fn holds_key(&self, sale_id: i64) -> String {
        format!("{}{sale_id}:holds", self.keys.sale_prefix)
    }

    fn hold_key(&self, order: OrderKey) -> String {
        format!("{}{}", self.keys.hold_prefix, order_hex(order))
    }

    async fn void_with(
        &self,
        order: OrderKey,
        before_ms: i64,
        even_confirmed: bool,
    ) -> Result<bool, StockError> {
        let voided: VoidCode = self
            .scripts
            .void
            .key(self.hold_key(order))
            .key(&self.keys.unconfirmed)
            .key(&self.keys.events)
            .arg(&self.keys.sale_prefix)
            .arg(order_hex(order))
            .arg(before_ms)
            .arg(u8::from(even_confirmed))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(voided == VoidCode::Voided)
    }

    /// The reserve script's call for one request (keys and arguments as `RESERVE` reads them).
    fn reserve_invocation(&self, req: &ReserveRequest) -> ::redis::ScriptInvocation<'_> {
        let mut invocation = self.scripts.reserve.prepare_invoke();
        invocation
            .key(self.sale_key(req.sale_id))
            .key(self.held_key(req.sale_id))
            .key(self.hold_key(req.order))
            .key(&self.keys.unconfirmed)
            .key(&self.keys.events)
            .key(self.holds_key(req.sale_id))
            .arg(req.sale_id)
            .arg(req.user_id)
            .arg(req.quantity)
            .arg(req.now_ms)
            .arg(order_hex(req.order));
        invocation
    }

    fn conn(&self) -> ConnectionManager {
        self.redis.conn()
    }

    /// Claims the sale: `Some(generation)` to build it, `None` when it is built already; waits
    /// while another instance builds it.
    async fn claim(&self, sale: &Sale) -> Result<Option<i64>, StockError> {
        let lease_ms = u64::try_from(LOAD_LEASE.as_millis()).unwrap_or(u64::MAX);
        loop {
            let reply: i64 = self
                .scripts
                .load_begin
                .key(self.sale_key(sale.id))
                .key(self.held_key(sale.id))
                .key(self.loading_key(sale.id))
                .key(&self.keys.generation)
                .key(self.holds_key(sale.id))
                .arg(sale.stock)
                .arg(sale.per_user_limit)
                .arg(sale.starts_at_ms)
                .arg(sale.ends_at_ms)
                .arg(lease_ms)
                .invoke_async(&mut self.conn())
                .await?;
            match ClaimCode::from_code(reply) {
                Some(ClaimCode::AlreadyBuilt) => return Ok(None),
                Some(ClaimCode::BuildInProgress) => tokio::time::sleep(LOAD_POLL).await,
                // Another database's sale under the same id and prefix (a new deployment
                // pointed at an old Redis): never sell its stock as ours.
                Some(ClaimCode::OtherSale) => {
                    return Err(StockError(
                        format!(
                            "Redis holds a different sale {} under this key prefix; \
                             use another redis.key_prefix or delete the old keys",
                            sale.id
                        )
                        .into(),
                    ))
                }
                // Not a code: the generation the claim was given (generations start at 1).
                None if reply > 0 => return Ok(Some(reply)),
                None => {
                    return Err(StockError(
                        format!("load_begin answered unknown outcome code {reply}").into(),
                    ))
                }
            }
        }
    }
}

#[async_trait]
impl StockStore for RedisStock {
    async fn watch(&self) -> Result<StockEvents, StockError> {
        // Every instance's scripts publish on one channel: each watcher gets its own
        // subscription, and its stream ends when the subscription does.
        let pubsub = self
            .redis
            .subscribe(flashsale_redis::events::STOCK_EVENTS)
            .await
            .map_err(|e| StockError(Box::new(e)))?;
        Ok(Box::pin(pubsub.into_on_message().filter_map(|message| {
            let event = message
                .get_payload::<String>()
                .ok()
                .and_then(|payload| flashsale_redis::events::parse(&payload));
            std::future::ready(event)
        })))
    }

    async fn load(
        &self,
        sale: &Sale,
        reservations: &[StoredReservation],
    ) -> Result<bool, StockError> {
        let Some(gen) = self.claim(sale).await? else {
            return Ok(false);
        };
        let lease_ms = u64::try_from(LOAD_LEASE.as_millis()).unwrap_or(u64::MAX);
        let mut holds = Vec::new();
        for r in reservations.iter().filter(|r| r.sale_id == sale.id) {
            let Ok(order) = uuid::Uuid::parse_str(&r.order_id) else {
                tracing::warn!(order_id = %r.order_id, "stored order id is not a uuid; skipped");
                continue;
            };
            holds.push((order.as_u128(), r));
        }
        for chunk in holds.chunks(LOAD_CHUNK) {
            let mut call = self.scripts.load_chunk.prepare_invoke();
            call.key(self.sale_key(sale.id))
                .key(self.held_key(sale.id))
                .key(self.loading_key(sale.id))
                .key(&self.keys.unconfirmed)
                .key(self.holds_key(sale.id))
                .arg(gen)
                .arg(lease_ms)
                .arg(sale.id);
            for (order, r) in chunk {
                call.key(self.hold_key(*order))
                    .arg(order_hex(*order))
                    .arg(r.user_id)
                    .arg(r.quantity)
                    .arg(u8::from(r.released));
            }
            let written: LoadStepCode = call.invoke_async(&mut self.conn()).await?;
            if written == LoadStepCode::ClaimLost {
                return Err(claim_lost(sale.id));
            }
        }
        let (built, remaining): (LoadStepCode, i64) = self
            .scripts
            .load_finish
            .key(self.sale_key(sale.id))
            .key(self.loading_key(sale.id))
            .key(&self.keys.events)
            .arg(gen)
            .arg(sale.id)
            .invoke_async(&mut self.conn())
            .await?;
        if built == LoadStepCode::ClaimLost {
            return Err(claim_lost(sale.id));
        }
        if remaining < 0 {
            tracing::error!(
                sale_id = sale.id,
                remaining,
                "stored orders exceed the stock"
            );
        }
        Ok(true)
    }

    async fn reserve(&self, req: ReserveRequest) -> Result<ReserveDecision, StockError> {
        let answer: (ReserveCode, i64) = self
            .reserve_invocation(&req)
            .invoke_async(&mut self.conn())
            .await?;
        Ok(decision(answer))
    }

    async fn reserve_many(
        &self,
        requests: &[ReserveRequest],
    ) -> Result<Vec<ReserveDecision>, StockError> {
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let invocations: Vec<_> = requests
            .iter()
            .map(|r| self.reserve_invocation(r))
            .collect();
        let pipeline = || {
            let mut pipe = ::redis::pipe();
            for invocation in &invocations {
                pipe.invoke_script(invocation);
            }
            pipe
        };
        // One round trip. A pipelined EVALSHA does not load a missing script (after a Redis
        // restart or SCRIPT FLUSH): then nothing ran, so load it and send them again.
        let answers: Vec<(ReserveCode, i64)> = match pipeline().query_async(&mut self.conn()).await
        {
            Ok(answers) => answers,
            Err(e)
                if e.kind() == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript) =>
            {
                self.scripts.reserve.load_async(&mut self.conn()).await?;
                pipeline().query_async(&mut self.conn()).await?
            }
            Err(e) => return Err(e.into()),
        };
        Ok(answers.into_iter().map(decision).collect())
    }

    async fn release(&self, order: OrderKey) -> Result<bool, StockError> {
        let released: ReleaseCode = self
            .scripts
            .release
            .key(self.hold_key(order))
            .key(&self.keys.unconfirmed)
            .key(&self.keys.events)
            .arg(&self.keys.sale_prefix)
            .arg(order_hex(order))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(released == ReleaseCode::Released)
    }

    async fn remaining(&self, sale_id: i64) -> Result<Option<i64>, StockError> {
        let (ready, remaining): (Option<String>, Option<i64>) = ::redis::cmd("HMGET")
            .arg(self.sale_key(sale_id))
            .arg(&["ready", "remaining"])
            .query_async(&mut self.conn())
            .await?;
        Ok(remaining.filter(|_| ready.as_deref() == Some("1")))
    }

    async fn remaining_many(&self, sale_ids: &[i64]) -> Result<Vec<Option<i64>>, StockError> {
        if sale_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = ::redis::pipe();
        for &sale_id in sale_ids {
            pipe.cmd("HMGET")
                .arg(self.sale_key(sale_id))
                .arg(&["ready", "remaining"]);
        }
        let all: Vec<(Option<String>, Option<i64>)> = pipe.query_async(&mut self.conn()).await?;
        Ok(all
            .into_iter()
            .map(|(ready, remaining)| remaining.filter(|_| ready.as_deref() == Some("1")))
            .collect())
    }

    async fn unconfirmed(&self, before_ms: i64) -> Result<Vec<OrderKey>, StockError> {
        let members: Vec<String> = ::redis::cmd("ZRANGEBYSCORE")
            .arg(&self.keys.unconfirmed)
            .arg("-inf")
            .arg(before_ms)
            .query_async(&mut self.conn())
            .await?;
        Ok(members
            .iter()
            .filter_map(|m| match u128::from_str_radix(m, 16) {
                Ok(order) => Some(order),
                Err(_) => {
                    tracing::warn!(member = %m, "unconfirmed index holds a malformed order id");
                    None
                }
            })
            .collect())
    }

    async fn confirm(&self, orders: &[OrderKey]) -> Result<(), StockError> {
        if orders.is_empty() {
            return Ok(());
        }
        let calls: Vec<_> = orders
            .chunks(CONFIRM_CHUNK)
            .map(|chunk| {
                let mut call = self.scripts.confirm.prepare_invoke();
                call.key(&self.keys.unconfirmed);
                for order in chunk {
                    call.key(self.hold_key(*order)).arg(order_hex(*order));
                }
                call
            })
            .collect();
        // One round trip: the script is loaded first (pipelines do not retry a missing one).
        let mut pipe = ::redis::pipe();
        pipe.load_script(&self.scripts.confirm).ignore();
        for call in &calls {
            pipe.invoke_script(call).ignore();
        }
        let () = pipe.query_async(&mut self.conn()).await?;
        Ok(())
    }

    async fn void(&self, order: OrderKey, before_ms: i64) -> Result<bool, StockError> {
        self.void_with(order, before_ms, false).await
    }

    async fn void_absent(&self, order: OrderKey, before_ms: i64) -> Result<bool, StockError> {
        self.void_with(order, before_ms, true).await
    }

    async fn audit(&self, sale: &Sale, repair: bool) -> Result<Option<SaleAudit>, StockError> {
        let (code, remaining_before, remaining_after, users, holds): (
            AuditCode,
            i64,
            i64,
            Vec<i64>,
            Vec<String>,
        ) = self
            .scripts
            .audit
            .key(self.sale_key(sale.id))
            .key(self.held_key(sale.id))
            .key(self.holds_key(sale.id))
            .key(&self.keys.events)
            .arg(&self.keys.hold_prefix)
            .arg(sale.id)
            .arg(sale.stock)
            .arg(u8::from(repair))
            .invoke_async(&mut self.conn())
            .await?;
        match code {
            AuditCode::Audited => {}
            AuditCode::NoHoldsSet => {
                return Err(StockError(
                    format!(
                        "sale {} was built by an older version without its holds set; \
                         it cannot be audited until it is rebuilt",
                        sale.id
                    )
                    .into(),
                ))
            }
            AuditCode::NotReady => return Ok(None),
        }
        let users = users
            .chunks_exact(3)
            .map(|f| HeldFix {
                user_id: f[0],
                before: f[1],
                after: f[2],
            })
            .collect();
        let malformed =
            || StockError(format!("audit of sale {} returned a malformed hold", sale.id).into());
        let holds = holds
            .chunks_exact(4)
            .map(|h| {
                Ok(LiveHold {
                    order: u128::from_str_radix(&h[0], 16).map_err(|_| malformed())?,
                    user_id: h[1].parse().map_err(|_| malformed())?,
                    quantity: h[2].parse().map_err(|_| malformed())?,
                    touched_ms: h[3].parse().map_err(|_| malformed())?,
                })
            })
            .collect::<Result<_, StockError>>()?;
        Ok(Some(SaleAudit {
            remaining_before,
            remaining_after,
            users,
            holds,
        }))
    }

    async fn adopt(
        &self,
        sale_id: i64,
        order: OrderKey,
        user_id: i64,
        quantity: i64,
    ) -> Result<AdoptOutcome, StockError> {
        let code: AdoptCode = self
            .scripts
            .adopt
            .key(self.sale_key(sale_id))
            .key(self.held_key(sale_id))
            .key(self.hold_key(order))
            .key(&self.keys.unconfirmed)
            .key(&self.keys.events)
            .key(self.holds_key(sale_id))
            .arg(sale_id)
            .arg(user_id)
            .arg(quantity)
            .arg(order_hex(order))
            .invoke_async(&mut self.conn())
            .await?;
        Ok(match code {
            AdoptCode::Adopted => AdoptOutcome::Adopted,
            AdoptCode::AlreadyHeld => AdoptOutcome::AlreadyHeld,
            AdoptCode::Conflict => AdoptOutcome::Conflict,
            AdoptCode::NotTracked => AdoptOutcome::NotTracked,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_ids_are_32_lowercase_hex_digits() {
        assert_eq!(order_hex(0), "0".repeat(32));
        assert_eq!(order_hex(u128::MAX), "f".repeat(32));
        let id = uuid::Uuid::new_v4().as_u128();
        assert_eq!(u128::from_str_radix(&order_hex(id), 16).ok(), Some(id));
        assert_eq!(order_hex(0xAB), format!("{}ab", "0".repeat(30)));
    }
}

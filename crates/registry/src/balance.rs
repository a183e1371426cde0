//! Client-side load balancing over the instances of a service.
//!
//! [`Balanced`] is what every gRPC client of flashsale is built on (`InventoryClient<Balanced>`
//! and so on). It is either one fixed channel ([`Balanced::direct`], the single-address case,
//! exactly a tonic `Channel`) or a pool ([`Balanced::over`]) following a resolved set of
//! instances ([`crate::resolver`]):
//!
//! ```text
//! watch::Receiver<Vec<Endpoint>> ──diff──▶ tower::discover::Change stream
//!   ──▶ tower::balance::p2c::Balance over PendingRequests<Ejecting<Channel>>
//!   ──▶ tower::buffer::Buffer (cloneable handle shared by every caller)
//! ```
//!
//! * **p2c** (default): each call samples two ready instances and takes the one with fewer
//!   requests in flight. Cheap, and it steers around a slow instance on its own.
//! * **weighted**: an instance of weight *w* takes *w* slots (each slot shares the
//!   instance's connection), and p2c runs over slots: when loads tie, traffic splits by
//!   weight; under load, each slot carries the same requests in flight, so an instance of
//!   weight 2 carries twice as many.
//! * **Outlier ejection**: an instance whose calls fail `eject_after` times in a row
//!   (transport errors, or `UNAVAILABLE`) is not offered to the balancer for a cool-down
//!   (`eject_ms`, doubling on each repeat up to 30 s); then it gets traffic again, and one
//!   success clears it. The last instance standing is never ejected. An instance the registry
//!   evicts is removed from the balancer at once.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::Deserialize;
use tokio::{
    sync::{mpsc, watch},
    time::{Instant, Sleep},
};
use tonic::{body::Body, codegen::http, transport::Channel};
use tower::{
    balance::p2c::Balance,
    buffer::Buffer,
    discover::Change,
    load::{CompleteOnResponse, PendingRequests},
    util::{BoxCloneSyncService, BoxService},
    BoxError, Service,
};

use crate::{resolver::Endpoint, AddressError};

type Req = http::Request<Body>;
type Resp = http::Response<Body>;
type RespFuture = BoxFuture<'static, Result<Resp, BoxError>>;

/// How many calls may wait for a pooled instance before callers wait for room.
const BUFFER: usize = 4096;
/// Longest cool-down of an instance ejected again and again.
const MAX_EJECTION: Duration = Duration::from_secs(30);

/// How calls are spread over instances.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Power of two choices, fewest requests in flight.
    #[default]
    P2c,
    /// By registered weight (p2c over weight-many slots per instance).
    Weighted,
}

/// Balancing settings (`discovery.*` in the configuration).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct BalanceConfig {
    /// The policy.
    pub policy: Policy,
    /// Consecutive failures that eject an instance.
    pub eject_after: u32,
    /// First cool-down of an ejected instance.
    pub eject_ms: u64,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            policy: Policy::P2c,
            eject_after: 3,
            eject_ms: 2_000,
        }
    }
}

/// A cloneable gRPC channel: one address, or balanced over a changing set of instances.
#[derive(Clone)]
pub struct Balanced(Inner);

#[derive(Clone)]
enum Inner {
    Direct(Channel),
    Pool(Buffer<Req, RespFuture>),
    Local(BoxCloneSyncService<Req, Resp, Infallible>),
}

impl std::fmt::Debug for Balanced {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Inner::Direct(_) => f.write_str("Balanced::Direct"),
            Inner::Pool(_) => f.write_str("Balanced::Pool"),
            Inner::Local(_) => f.write_str("Balanced::Local"),
        }
    }
}

impl Balanced {
    /// One fixed address (`host:port` or a URI), connected on first use.
    pub fn direct(address: &str) -> Result<Self, AddressError> {
        Ok(Self(Inner::Direct(crate::lazy_channel(address)?)))
    }

    /// The service itself, in this process (`FooServer::new(service)`): calls skip the
    /// network, HTTP/2 and the connection's tasks, and keep everything else a remote call has —
    /// the same generated server decodes the request, reads its metadata (deadline, trace) and
    /// runs the same handler. `flashsale dev` wires its gateway this way.
    pub fn local<S>(server: S) -> Self
    where
        S: Service<Req, Response = Resp, Error = Infallible> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
    {
        Self(Inner::Local(BoxCloneSyncService::new(server)))
    }

    /// Balanced over `set`, following its changes. Calls wait (within their deadline) while
    /// the set is empty. Must be called inside a Tokio runtime.
    pub fn over(set: watch::Receiver<Vec<Endpoint>>, config: &BalanceConfig) -> Self {
        let (changes, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(follow(set, config.clone(), changes));
        // A discover stream that never ends: with the set gone (shutdown) it stays as it is.
        let discover = futures::stream::poll_fn(move |cx| match rx.poll_recv(cx) {
            Poll::Ready(Some(change)) => Poll::Ready(Some(Ok::<_, Infallible>(change))),
            _ => Poll::Pending,
        });
        let balance: Balance<_, Req> = Balance::new(discover);
        Self(Inner::Pool(Buffer::new(BoxService::new(balance), BUFFER)))
    }
}

impl Service<Req> for Balanced {
    type Response = Resp;
    type Error = BoxError;
    type Future = RespFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.0 {
            Inner::Direct(channel) => channel.poll_ready(cx).map_err(Into::into),
            Inner::Pool(pool) => pool.poll_ready(cx),
            Inner::Local(service) => service.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match &mut self.0 {
            Inner::Direct(channel) => {
                let call = channel.call(request);
                Box::pin(async move { call.await.map_err(unavailable) })
            }
            Inner::Pool(pool) => Box::pin(pool.call(request)),
            Inner::Local(service) => {
                let call = service.call(request);
                Box::pin(async move { call.await.map_err(Into::into) })
            }
        }
    }
}

/// A transport failure (no connection, connection lost) as the gRPC status it is,
/// `UNAVAILABLE`, so callers can tell it from a failure of the call itself and retry idempotent
/// calls (tonic would report it as `UNKNOWN`). Failures tonic does classify keep their status
/// (a deadline the channel enforced stays `CANCELLED`, which is never retried).
fn unavailable(error: tonic::transport::Error) -> BoxError {
    let status = tonic::Status::from_error(Box::new(error));
    if status.code() != tonic::Code::Unknown {
        return Box::new(status);
    }
    Box::new(tonic::Status::unavailable(format!(
        "instance unreachable: {}",
        status.message()
    )))
}

/// Ejection bookkeeping shared by every instance of one pool.
#[derive(Debug, Default)]
struct Pool {
    members: AtomicUsize,
    ejected: AtomicUsize,
}

/// One instance's failure record.
#[derive(Debug)]
struct Outlier {
    address: String,
    after: u32,
    base: Duration,
    pool: Arc<Pool>,
    state: Mutex<OutlierState>,
}

#[derive(Debug)]
struct OutlierState {
    failures: u32,
    ejected_until: Option<Instant>,
    cooldown: Duration,
}

impl Outlier {
    fn new(address: String, config: &BalanceConfig, pool: Arc<Pool>) -> Self {
        let base = Duration::from_millis(config.eject_ms.max(1));
        Self {
            address,
            after: config.eject_after,
            base,
            pool,
            state: Mutex::new(OutlierState {
                failures: 0,
                ejected_until: None,
                cooldown: base,
            }),
        }
    }

    /// While ejected: until when. A cool-down that is over is ended here.
    fn ejected_until(&self, now: Instant) -> Option<Instant> {
        let mut state = self.state.lock();
        match state.ejected_until {
            Some(until) if until > now => Some(until),
            Some(_) => {
                state.ejected_until = None;
                self.pool.ejected.fetch_sub(1, Ordering::Relaxed);
                tracing::info!(address = %self.address, "instance back from ejection");
                None
            }
            None => None,
        }
    }

    fn success(&self) {
        let mut state = self.state.lock();
        if state.failures != 0 {
            state.failures = 0;
            state.cooldown = self.base;
        }
    }

    fn failure(&self) {
        if self.after == 0 {
            return;
        }
        let mut state = self.state.lock();
        state.failures = state.failures.saturating_add(1);
        if state.failures < self.after || state.ejected_until.is_some() {
            return;
        }
        // Never eject the last instance that is not ejected.
        let members = self.pool.members.load(Ordering::Relaxed);
        if self.pool.ejected.load(Ordering::Relaxed) + 1 >= members {
            return;
        }
        self.pool.ejected.fetch_add(1, Ordering::Relaxed);
        state.ejected_until = Some(Instant::now() + state.cooldown);
        tracing::warn!(address = %self.address, cooldown_ms = state.cooldown.as_millis() as u64, "instance ejected after repeated failures");
        state.cooldown = (state.cooldown * 2).min(MAX_EJECTION);
        // One more failure after the cool-down ejects it again.
        state.failures = self.after - 1;
    }

    /// The instance left the set.
    fn retire(&self) {
        let mut state = self.state.lock();
        if state.ejected_until.take().is_some() {
            self.pool.ejected.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A channel to one instance that is not ready while the instance is ejected.
struct Ejecting {
    channel: Channel,
    outlier: Arc<Outlier>,
    wake: Option<Pin<Box<Sleep>>>,
}

impl Service<Req> for Ejecting {
    type Response = Resp;
    type Error = BoxError;
    type Future = RespFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Some(until) = self.outlier.ejected_until(Instant::now()) {
            let wake = self
                .wake
                .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(until)));
            if wake.deadline() != until {
                wake.as_mut().reset(until);
            }
            if wake.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        self.wake = None;
        self.channel.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let call = self.channel.call(request);
        let outlier = Arc::clone(&self.outlier);
        Box::pin(async move {
            match call.await {
                Ok(response) => {
                    // A trailers-only UNAVAILABLE (14): the instance is shutting down or sick.
                    if response
                        .headers()
                        .get("grpc-status")
                        .is_some_and(|s| s.as_bytes() == b"14")
                    {
                        outlier.failure();
                    } else {
                        outlier.success();
                    }
                    Ok(response)
                }
                Err(e) => {
                    outlier.failure();
                    Err(unavailable(e))
                }
            }
        })
    }
}

type Slot = PendingRequests<Ejecting, CompleteOnResponse>;
type Key = (String, u32);

/// Turns each new version of the set into discover changes.
async fn follow(
    mut set: watch::Receiver<Vec<Endpoint>>,
    config: BalanceConfig,
    changes: mpsc::UnboundedSender<Change<Key, Slot>>,
) {
    let pool = Arc::new(Pool::default());
    // address → (slots, outlier)
    let mut current: HashMap<String, (u32, Arc<Outlier>)> = HashMap::new();
    loop {
        let wanted: HashMap<String, u32> = set
            .borrow_and_update()
            .iter()
            .map(|e| {
                let slots = match config.policy {
                    Policy::P2c => 1,
                    Policy::Weighted => e.weight.clamp(1, 1000),
                };
                (e.address.clone(), slots)
            })
            .collect();
        let gone: Vec<String> = current
            .iter()
            .filter(|(address, (slots, _))| wanted.get(*address) != Some(slots))
            .map(|(address, _)| address.clone())
            .collect();
        for address in gone {
            if let Some((slots, outlier)) = current.remove(&address) {
                outlier.retire();
                for slot in 0..slots {
                    let _ = changes.send(Change::Remove((address.clone(), slot)));
                }
                tracing::info!(%address, "instance removed from the balancer");
            }
        }
        for (address, slots) in wanted {
            if current.contains_key(&address) {
                continue;
            }
            let channel = match crate::lazy_channel(&address) {
                Ok(channel) => channel,
                Err(e) => {
                    tracing::warn!(error = %e, "skipping an instance with a bad address");
                    continue;
                }
            };
            let outlier = Arc::new(Outlier::new(address.clone(), &config, Arc::clone(&pool)));
            for slot in 0..slots {
                let ejecting = Ejecting {
                    channel: channel.clone(),
                    outlier: Arc::clone(&outlier),
                    wake: None,
                };
                let _ = changes.send(Change::Insert(
                    (address.clone(), slot),
                    PendingRequests::new(ejecting, CompleteOnResponse::default()),
                ));
            }
            tracing::info!(%address, slots, "instance added to the balancer");
            current.insert(address, (slots, outlier));
        }
        pool.members.store(current.len(), Ordering::Relaxed);
        if changes.is_closed() || set.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outlier(pool: &Arc<Pool>) -> Outlier {
        Outlier::new(
            "a:1".into(),
            &BalanceConfig {
                policy: Policy::P2c,
                eject_after: 3,
                eject_ms: 100,
            },
            Arc::clone(pool),
        )
    }

    #[tokio::test]
    async fn repeated_failures_eject_until_the_cooldown_ends_and_repeat_offenders_wait_longer() {
        let pool = Arc::new(Pool::default());
        pool.members.store(2, Ordering::Relaxed);
        let o = outlier(&pool);
        let now = Instant::now();
        o.failure();
        o.failure();
        assert!(
            o.ejected_until(now).is_none(),
            "two failures are not enough"
        );
        o.failure();
        let until = o.ejected_until(now).unwrap_or(now);
        assert!(until > now);
        assert_eq!(pool.ejected.load(Ordering::Relaxed), 1);
        // After the cool-down it is back; one more failure ejects it again, for longer.
        assert!(o.ejected_until(until).is_none());
        assert_eq!(pool.ejected.load(Ordering::Relaxed), 0);
        let later = Instant::now();
        o.failure();
        let again = o.ejected_until(later).unwrap_or(later);
        assert!(
            again - later > Duration::from_millis(150),
            "{:?}",
            again - later
        );
        // Success clears the record.
        assert!(o.ejected_until(again).is_none());
        o.success();
        o.failure();
        assert!(o.ejected_until(Instant::now()).is_none());
    }

    #[tokio::test]
    async fn the_last_healthy_instance_is_never_ejected() {
        let pool = Arc::new(Pool::default());
        pool.members.store(1, Ordering::Relaxed);
        let o = outlier(&pool);
        for _ in 0..10 {
            o.failure();
        }
        assert!(o.ejected_until(Instant::now()).is_none());
        assert_eq!(pool.ejected.load(Ordering::Relaxed), 0);
    }
}

//! The registry service (`flashsale serve registry`).
//!
//! The registry keeps, per service, the instances whose lease is live. `Register` and
//! `Heartbeat` extend a lease by the TTL; an evictor removes instances whose lease ran out;
//! `Deregister` removes one at once. Every change bumps a generation number on a
//! `tokio::sync::watch` channel; each `Watch` stream wakes on it, and sends its service's set
//! again when that set is different from what it sent last. Replicas do not talk to each
//! other: instances register with all of them, and clients merge what they see
//! ([`crate::resolver`]).

use std::{collections::HashMap, pin::Pin, sync::Arc, time::Duration};

use flashsale_proto::registry::{
    self as pb,
    registry_server::{Registry, RegistryServer},
};
use futures::Stream;
use parking_lot::Mutex;
use tokio::{sync::watch, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// One registered instance and when its lease ends.
#[derive(Debug, Clone)]
struct Lease {
    instance: pb::Instance,
    expires_at: Instant,
}

#[derive(Debug)]
struct State {
    ttl: Duration,
    /// (service, address) → lease.
    leases: Mutex<HashMap<(String, String), Lease>>,
    /// Bumped after every change of the set.
    generation: watch::Sender<u64>,
    /// Ends every watch stream (so a graceful shutdown does not wait for them).
    shutdown: CancellationToken,
    /// Services that ever registered (their gauge drops to 0 rather than vanishing).
    seen_services: Mutex<std::collections::BTreeSet<String>>,
}

impl State {
    fn changed(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
        self.publish_counts();
    }

    /// Sets the instances gauge of every service seen so far (0 once all its instances left).
    fn publish_counts(&self) {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for lease in self.leases.lock().values() {
            *counts.entry(lease.instance.service.clone()).or_default() += 1;
        }
        let mut seen = self.seen_services.lock();
        seen.extend(counts.keys().cloned());
        for service in seen.iter() {
            let n = counts.get(service).copied().unwrap_or(0);
            metrics::gauge!(flashsale_telemetry::metrics::REGISTRY_INSTANCES, "service" => service.clone())
                .set(n as f64);
        }
    }

    /// The live instances of a service, sorted by address.
    fn snapshot(&self, service: &str) -> Vec<pb::Instance> {
        let mut set: Vec<pb::Instance> = self
            .leases
            .lock()
            .values()
            .filter(|l| l.instance.service == service)
            .map(|l| l.instance.clone())
            .collect();
        set.sort_by(|a, b| a.address.cmp(&b.address));
        set
    }

    /// Removes every expired lease; returns how many.
    fn evict_expired(&self, now: Instant) -> usize {
        let evicted: Vec<(String, String)> = {
            let mut leases = self.leases.lock();
            let gone: Vec<_> = leases
                .iter()
                .filter(|(_, l)| l.expires_at <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in &gone {
                leases.remove(key);
            }
            gone
        };
        for (service, address) in &evicted {
            tracing::warn!(%service, %address, "instance evicted: no heartbeat within the TTL");
        }
        if !evicted.is_empty() {
            self.changed();
        }
        evicted.len()
    }
}

/// The registry: leases in memory, pushed to watchers on every change. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RegistryService {
    state: Arc<State>,
}

impl RegistryService {
    /// An empty registry whose leases last `ttl` after each register or heartbeat. Its watch
    /// streams and its evictor end when `shutdown` is cancelled.
    pub fn new(ttl: Duration, shutdown: CancellationToken) -> Self {
        let (generation, _) = watch::channel(0);
        Self {
            state: Arc::new(State {
                ttl: ttl.max(Duration::from_millis(10)),
                leases: Mutex::new(HashMap::new()),
                seen_services: Mutex::new(std::collections::BTreeSet::new()),
                generation,
                shutdown,
            }),
        }
    }

    /// The lease length.
    pub fn ttl(&self) -> Duration {
        self.state.ttl
    }

    /// Evicts expired instances every quarter TTL until shutdown, so an instance is gone at
    /// most 1.25 TTL after its last heartbeat.
    pub fn spawn_evictor(&self) -> JoinHandle<()> {
        let state = Arc::clone(&self.state);
        let shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(state.ttl / 4);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => { state.evict_expired(Instant::now()); }
                }
            }
        })
    }

    /// The gRPC server of this registry.
    pub fn into_server(self) -> RegistryServer<Self> {
        RegistryServer::new(self)
    }
}

fn check_name(what: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() || value.len() > 255 {
        return Err(Status::invalid_argument(format!(
            "{what} must be 1 to 255 bytes"
        )));
    }
    Ok(())
}

/// The stream of instance sets sent to one watcher.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::InstanceSet, Status>> + Send>>;

#[tonic::async_trait]
impl Registry for RegistryService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterReply>, Status> {
        let mut instance = request
            .into_inner()
            .instance
            .ok_or_else(|| Status::invalid_argument("instance is required"))?;
        check_name("service", &instance.service)?;
        check_name("address", &instance.address)?;
        instance.weight = instance.weight.clamp(1, 1000);
        let key = (instance.service.clone(), instance.address.clone());
        let expires_at = Instant::now() + self.state.ttl;
        let changed = {
            let mut leases = self.state.leases.lock();
            let changed = leases.get(&key).is_none_or(|l| l.instance != instance);
            leases.insert(
                key,
                Lease {
                    instance: instance.clone(),
                    expires_at,
                },
            );
            changed
        };
        if changed {
            tracing::info!(service = %instance.service, address = %instance.address, weight = instance.weight, "instance registered");
            self.state.changed();
        }
        Ok(Response::new(pb::RegisterReply {
            ttl_ms: u64::try_from(self.state.ttl.as_millis()).unwrap_or(u64::MAX),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatReply>, Status> {
        let r = request.into_inner();
        let known = match self.state.leases.lock().get_mut(&(r.service, r.address)) {
            Some(lease) => {
                lease.expires_at = Instant::now() + self.state.ttl;
                true
            }
            None => false,
        };
        Ok(Response::new(pb::HeartbeatReply { known }))
    }

    async fn deregister(
        &self,
        request: Request<pb::DeregisterRequest>,
    ) -> Result<Response<pb::DeregisterReply>, Status> {
        let r = request.into_inner();
        let removed = self
            .state
            .leases
            .lock()
            .remove(&(r.service.clone(), r.address.clone()))
            .is_some();
        if removed {
            tracing::info!(service = %r.service, address = %r.address, "instance deregistered");
            self.state.changed();
        }
        Ok(Response::new(pb::DeregisterReply { removed }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let service = request.into_inner().service;
        check_name("service", &service)?;
        let state = Arc::clone(&self.state);
        let changes = state.generation.subscribe();
        let stream = futures::stream::unfold(
            (state, changes, service, None::<Vec<pb::Instance>>),
            |(state, mut changes, service, last)| async move {
                loop {
                    changes.borrow_and_update();
                    let set = state.snapshot(&service);
                    if last.as_ref() != Some(&set) {
                        let message = pb::InstanceSet {
                            instances: set.clone(),
                        };
                        return Some((Ok(message), (state, changes, service, Some(set))));
                    }
                    tokio::select! {
                        changed = changes.changed() => changed.ok()?,
                        () = state.shutdown.cancelled() => return None,
                    }
                }
            },
        );
        Ok(Response::new(Box::pin(stream)))
    }
}

//! Where a service's instances are: a static list, or what the registry replicas say.
//!
//! [`Source::resolve`] gives a `watch::Receiver` of the current set of [`Endpoint`]s, which the
//! balancer ([`crate::balance`]) follows. With registry replicas, one task per replica keeps a
//! `Watch` stream open and stores that replica's view; the published set is the union of the
//! views of the replicas currently reachable (an instance registers with all of them, so any
//! live replica knows it). A replica whose stream breaks no longer counts until it answers
//! again; when none is reachable, the last set is kept, so clients go on calling the instances
//! they know (outlier ejection handles the dead ones).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use flashsale_proto::registry::{registry_client::RegistryClient, WatchRequest};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::AddressError;

/// One instance a client may call.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// `host:port`.
    pub address: String,
    /// Relative share of traffic under weighted balancing (at least 1).
    pub weight: u32,
}

/// Where the instances of a service are found.
#[derive(Debug, Clone)]
pub enum Source {
    /// A fixed list of addresses, each of weight 1 (for Kubernetes: a headless service's
    /// pods, or one address behind a Service).
    Static(Vec<String>),
    /// The registry replicas (`host:port`), merged.
    Registry(Vec<String>),
}

/// How long to wait before watching a replica again after its stream broke.
const RETRY: Duration = Duration::from_millis(250);

impl Source {
    /// The live set of `service`, kept current until `shutdown`.
    pub fn resolve(
        &self,
        service: &str,
        shutdown: &CancellationToken,
    ) -> Result<watch::Receiver<Vec<Endpoint>>, AddressError> {
        match self {
            Source::Static(addresses) => {
                let mut set: Vec<Endpoint> = addresses
                    .iter()
                    .map(|a| Endpoint {
                        address: a.clone(),
                        weight: 1,
                    })
                    .collect();
                set.sort();
                set.dedup();
                let (tx, rx) = watch::channel(set);
                // Keeps the sender alive (and the set current) until shutdown.
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    shutdown.cancelled().await;
                    drop(tx);
                });
                Ok(rx)
            }
            Source::Registry(replicas) => {
                let (tx, rx) = watch::channel(Vec::new());
                let merger = Arc::new(Merger {
                    views: Mutex::new(vec![None; replicas.len()]),
                    out: tx,
                });
                for (i, replica) in replicas.iter().enumerate() {
                    let client = RegistryClient::new(crate::lazy_channel(replica)?);
                    tokio::spawn(watch_replica(
                        client,
                        replica.clone(),
                        service.to_owned(),
                        i,
                        Arc::clone(&merger),
                        shutdown.clone(),
                    ));
                }
                Ok(rx)
            }
        }
    }
}

/// The views of every replica, and the merged set published to the balancer.
struct Merger {
    /// Per replica: its last set while its stream is open, `None` while it is unreachable.
    views: Mutex<Vec<Option<Vec<Endpoint>>>>,
    out: watch::Sender<Vec<Endpoint>>,
}

impl Merger {
    fn set_view(&self, replica: usize, view: Option<Vec<Endpoint>>) {
        let merged = {
            let mut views = self.views.lock();
            if let Some(slot) = views.get_mut(replica) {
                *slot = view;
            }
            if views.iter().all(Option::is_none) {
                // Nobody to ask: keep calling what we know.
                return;
            }
            let mut by_address: BTreeMap<String, u32> = BTreeMap::new();
            for endpoint in views.iter().flatten().flatten() {
                let weight = by_address.entry(endpoint.address.clone()).or_insert(0);
                *weight = (*weight).max(endpoint.weight);
            }
            by_address
                .into_iter()
                .map(|(address, weight)| Endpoint { address, weight })
                .collect::<Vec<_>>()
        };
        self.out.send_if_modified(|current| {
            if *current == merged {
                false
            } else {
                *current = merged;
                true
            }
        });
    }
}

async fn watch_replica(
    mut client: RegistryClient<tonic::transport::Channel>,
    replica: String,
    service: String,
    index: usize,
    merger: Arc<Merger>,
    shutdown: CancellationToken,
) {
    loop {
        let watched = async {
            let mut stream = client
                .watch(WatchRequest {
                    service: service.clone(),
                })
                .await?
                .into_inner();
            while let Some(set) = stream.message().await? {
                let view = set
                    .instances
                    .into_iter()
                    .map(|i| Endpoint {
                        address: i.address,
                        weight: i.weight.max(1),
                    })
                    .collect();
                merger.set_view(index, Some(view));
            }
            Ok::<_, tonic::Status>(())
        };
        let ended = tokio::select! {
            () = shutdown.cancelled() => return,
            ended = watched => ended,
        };
        if let Err(e) = ended {
            tracing::debug!(%replica, %service, error = %e, "registry watch broke");
        }
        merger.set_view(index, None);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

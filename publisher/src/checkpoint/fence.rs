//! The publisher fence: one coordination.k8s.io Lease per BinlogStream (the operator creates
//! it). A publisher streams only while it holds the lease, and releases it after its final
//! checkpoint, so a replacement pod (a deleted or evicted pod's successor starts while the old
//! one still drains) waits for the old one and then resumes from its final checkpoint instead
//! of reading the same source beside it.
//!
//! While the API server cannot be reached the holder keeps streaming: nobody can take the
//! lease meanwhile. A holder that finds the lease taken by another publisher (it was presumed
//! dead after the lease expired) stops with an error, never as if it were done.

use std::{sync::Arc, time::Duration};

use kube::Client;
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseManagerBuilder};
use tokio::{sync::oneshot, task::JoinHandle};
use tracing::{info, warn};

/// Without renewal the lease is presumed abandoned after this long (a SIGKILLed publisher's
/// successor waits at most this long). Renewed `LEASE_GRACE` before it expires: three
/// writes a minute per publisher.
const LEASE_SECONDS: u64 = 30;
const LEASE_GRACE: u64 = 10;
/// Pause after an API error before trying again.
const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    #[error("publisher lease {lease}: {message}")]
    Lease { lease: String, message: String },
}

/// The held lease. `lost` fires if another publisher took it.
pub struct Fence {
    manager: Arc<LeaseManager>,
    lease: String,
    renewer: JoinHandle<()>,
    pub lost: oneshot::Receiver<()>,
}

impl Fence {
    /// Waits until this publisher holds lease `namespace/lease`, then keeps it renewed.
    pub async fn acquire(
        client: Client,
        namespace: &str,
        lease: &str,
        identity: &str,
    ) -> Result<Fence, FenceError> {
        let fail = |message: String| FenceError::Lease {
            lease: format!("{namespace}/{lease}"),
            message,
        };
        let manager = loop {
            match LeaseManagerBuilder::new(client.clone(), lease)
                .with_namespace(namespace)
                .with_identity(identity)
                .with_duration(LEASE_SECONDS)
                .with_grace(LEASE_GRACE)
                .with_field_manager(format!("binlogstream-publisher-{identity}"))
                .with_create_mode(LeaseCreateMode::UseExistent)
                .build()
                .await
            {
                Ok(m) => break Arc::new(m),
                Err(kube_lease_manager::LeaseManagerError::NonexistentLease(_)) => {
                    return Err(fail(
                        "does not exist; the operator creates it with the publisher's Role \
                         (an operator older than the publisher?)"
                            .into(),
                    ))
                }
                Err(e) => {
                    warn!(lease, error = %e, "cannot read the publisher lease; retrying");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        let mut said_waiting = false;
        loop {
            // Returns when this publisher's holding changes; at first that is when it gets it.
            let waiting = tokio::time::timeout(Duration::from_secs(2), manager.changed());
            match waiting.await {
                Ok(Ok(true)) => break,
                Ok(Ok(false)) => {}
                Ok(Err(e)) => {
                    warn!(lease, error = %e, "publisher lease: API error; retrying");
                    tokio::time::sleep(RETRY).await;
                }
                Err(_) if !said_waiting => {
                    said_waiting = true;
                    info!(lease, identity, "waiting for the publisher lease: another publisher of this stream has not stopped yet");
                }
                Err(_) => {}
            }
        }
        info!(lease, identity, "holding the publisher lease");
        let (tx, lost) = oneshot::channel();
        let renewer = tokio::spawn(renew(manager.clone(), lease.to_string(), tx));
        Ok(Fence {
            manager,
            lease: lease.to_string(),
            renewer,
            lost,
        })
    }

    /// Stops renewing and frees the lease for the next publisher (after the final checkpoint).
    pub async fn release(self) {
        self.renewer.abort();
        let _ = self.renewer.await;
        match self.manager.release().await {
            Ok(()) => info!(lease = %self.lease, "released the publisher lease"),
            Err(e) => {
                warn!(lease = %self.lease, error = %e, "could not release the publisher lease; the next publisher waits for it to expire")
            }
        }
    }
}

/// Renews until the lease is lost. `changed()` renews inside and returns only when the
/// holding changes or a call fails.
async fn renew(manager: Arc<LeaseManager>, lease: String, lost: oneshot::Sender<()>) {
    let mut last_warning: Option<tokio::time::Instant> = None;
    loop {
        match manager.changed().await {
            Ok(true) => {}
            Ok(false) => {
                warn!(
                    lease,
                    "the publisher lease was taken by another publisher; stopping"
                );
                let _ = lost.send(());
                return;
            }
            Err(e) => {
                // At most one line per half minute while the API server stays away.
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(30)) {
                    warn!(lease, error = %e, "cannot renew the publisher lease; streaming on (nobody can take it while the API server is unreachable), retrying");
                    last_warning = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(RETRY).await;
            }
        }
    }
}

//! The access registry as every replica sees it: tenants, their project keys and role
//! tables, and admins, held in memory and refreshed from the event store.
//!
//! Revocation across replicas: every `refresh` interval (250 ms by default) each replica asks
//! the store for the latest sequence of every Tenant and Admin aggregate (one index scan of a
//! small registry) and reloads only the aggregates that moved. A project key revoked, an admin
//! removed or detached on one replica is refused by every other within that interval plus one
//! query. This reads committed rows directly, not the feed, so a long transaction elsewhere
//! (which holds back the feed's horizon) cannot delay a revocation. The replica that made the
//! change refreshes before answering, so its own next call already sees it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use cqrs_es::Aggregate;
use identity_domain::admin::Admin;
use identity_domain::tenant::Tenant;
use identity_store::{EventLog, StoreError};
use uuid::Uuid;

use super::permission::{default_roles, Permission, Permissions};

/// One consistent view of the registry.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub tenants: HashMap<String, Arc<Tenant>>,
    pub admins: HashMap<Uuid, Arc<Admin>>,
    /// Live project keys: key id → (tenant, SHA-256 of the secret, hex).
    pub keys: HashMap<String, (String, String)>,
    /// Aggregate id → the sequence this snapshot holds.
    sequences: HashMap<String, usize>,
}

impl Snapshot {
    pub fn tenant(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.tenants.get(id)
    }

    /// The role table of a tenant: the default table with the tenant's own changes.
    pub fn roles_of(&self, tenant: &str) -> BTreeMap<String, BTreeSet<Permission>> {
        let mut table: BTreeMap<String, BTreeSet<Permission>> = default_roles()
            .into_iter()
            .map(|(r, ps)| (r.to_string(), ps.into_iter().collect()))
            .collect();
        if let Some(t) = self.tenants.get(tenant) {
            for (role, names) in &t.roles {
                // An empty list set through SetRolePermissions means "back to the default".
                if names.is_empty() {
                    continue;
                }
                let perms: BTreeSet<Permission> = names
                    .iter()
                    .filter_map(|n| Permission::parse(n))
                    .filter(|p| !p.is_global())
                    .collect();
                table.insert(role.clone(), perms);
            }
        }
        table
    }

    /// What a user with these roles holds in a tenant.
    pub fn permissions_of_roles<'a>(
        &self,
        tenant: &str,
        roles: impl IntoIterator<Item = &'a str>,
    ) -> Permissions {
        let table = self.roles_of(tenant);
        let mut held = Permissions::default();
        for role in roles {
            for p in table.get(role).into_iter().flatten() {
                held.insert(*p);
            }
        }
        held.without_global()
    }
}

/// The registry of one replica.
#[derive(Debug, Clone)]
pub struct Directory {
    log: EventLog,
    current: Arc<RwLock<Arc<Snapshot>>>,
    /// One refresh at a time (the background loop and local writers share it).
    refreshing: Arc<tokio::sync::Mutex<()>>,
}

impl Directory {
    /// Loads the whole registry.
    pub async fn open(log: EventLog) -> Result<Self, StoreError> {
        let d = Self {
            log,
            current: Arc::new(RwLock::new(Arc::new(Snapshot::default()))),
            refreshing: Arc::new(tokio::sync::Mutex::new(())),
        };
        d.refresh().await?;
        Ok(d)
    }

    /// The registry as of the last refresh.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        match self.current.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Reloads every Tenant and Admin aggregate that changed since the last refresh.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let _one = self.refreshing.lock().await;
        let before = self.snapshot();
        let tenant_heads = self.log.heads_of_type(Tenant::TYPE).await?;
        let admin_heads = self.log.heads_of_type(Admin::TYPE).await?;
        let moved = |heads: &[(String, usize)]| -> Vec<String> {
            heads
                .iter()
                .filter(|(id, seq)| before.sequences.get(id) != Some(seq))
                .map(|(id, _)| id.clone())
                .collect()
        };
        let (tenants_moved, admins_moved) = (moved(&tenant_heads), moved(&admin_heads));
        if tenants_moved.is_empty() && admins_moved.is_empty() {
            return Ok(());
        }
        let mut tenants = before.tenants.clone();
        let mut admins = before.admins.clone();
        let mut sequences = before.sequences.clone();
        for id in tenants_moved {
            let (state, seq) = self.fold::<Tenant>(&id).await?;
            if let Some(t) = state.id.clone() {
                tenants.insert(t.to_string(), Arc::new(state));
            }
            sequences.insert(id, seq);
        }
        for id in admins_moved {
            let (state, seq) = self.fold::<Admin>(&id).await?;
            if let Some(a) = state.id {
                admins.insert(a, Arc::new(state));
            }
            sequences.insert(id, seq);
        }
        let keys = tenants
            .iter()
            .flat_map(|(tenant, t)| {
                t.keys
                    .values()
                    .filter(|k| k.revoked_at.is_none())
                    .map(|k| (k.key_id.clone(), (tenant.clone(), k.digest.clone())))
            })
            .collect();
        let next = Arc::new(Snapshot {
            tenants,
            admins,
            keys,
            sequences,
        });
        match self.current.write() {
            Ok(mut s) => *s = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    /// An aggregate's state from the store itself (not a cache another replica may have made
    /// stale) and the sequence it reached.
    async fn fold<A: Aggregate + Default>(&self, id: &str) -> Result<(A, usize), StoreError> {
        let events = self.log.events::<A>(id).await?;
        let mut state = A::default();
        let mut seq = 0;
        for e in events {
            seq = e.sequence;
            state.apply(e.payload);
        }
        Ok((state, seq))
    }

    /// Refreshes in the background every `every` until the process ends.
    pub fn spawn_refresh(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let d = self.clone();
        tokio::spawn(async move {
            let mut failing = false;
            loop {
                tokio::time::sleep(every).await;
                match d.refresh().await {
                    Ok(()) => failing = false,
                    Err(e) if !failing => {
                        failing = true;
                        tracing::warn!(error = %e, "cannot refresh the access registry; using the last one");
                    }
                    Err(_) => {}
                }
            }
        })
    }
}

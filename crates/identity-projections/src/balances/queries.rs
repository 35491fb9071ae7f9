//! Reads of the balances read model, with the cache of recent answers.

use std::sync::{Arc, Mutex};

use sqlx::Row;

use identity_domain::values::{TokenAmount, TokenId};
use identity_domain::wallet::{OwnerType, WalletStatus, WalletType};

use crate::queries::{parsed, Result};
use crate::Projections;

/// Recent answers of the balances read model. Before its cursor moves, the answers the move
/// makes stale are forgotten: those of the wallets and owners a batch applied here touched,
/// or all of them when the change came from elsewhere (another replica's checkpoint, a
/// swapped-in rebuild). So a reader that waited for `min_position` never gets an answer
/// older than that position. A query that began before a move stores nothing (the
/// generation tells), so a stale answer cannot slip in.
#[derive(Debug)]
pub(crate) struct ReadCache {
    capacity: usize,
    inner: Mutex<Answers>,
}

/// The generation (bumped by every move) and the answers stored under it.
type Answers = (u64, hashlink::LruCache<AnswerKey, Arc<Vec<WalletView>>>);

/// What an answer is of: a tenant's wallet, or an owner's wallets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum AnswerKey {
    Wallet {
        tenant: String,
        wallet_id: String,
    },
    Owner {
        tenant: String,
        owner_type: String,
        owner_id: String,
    },
}

impl ReadCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new((0, hashlink::LruCache::new(capacity.max(1)))),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Answers> {
        // The cache holds no invariant a panic could break half-way.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached answer, or the generation a fresh answer must be stored under.
    fn get(&self, key: &AnswerKey) -> std::result::Result<Arc<Vec<WalletView>>, u64> {
        let mut inner = self.lock();
        let generation = inner.0;
        inner.1.get(key).cloned().ok_or(generation)
    }

    fn put(&self, key: AnswerKey, generation: u64, value: Arc<Vec<WalletView>>) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.lock();
        if inner.0 == generation {
            inner.1.insert(key, value);
        }
    }

    /// Forgets every answer.
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.0 += 1;
        inner.1.clear();
    }

    /// Forgets the answers that involve a wallet or an owner of `touched`.
    pub(crate) fn forget(&self, touched: &crate::apply::Touched) {
        if touched.is_empty() {
            return; // The batch changed no balance row: every answer still holds.
        }
        let mut inner = self.lock();
        inner.0 += 1;
        let stale: Vec<AnswerKey> = inner
            .1
            .iter()
            .filter(|(key, answer)| match key {
                AnswerKey::Wallet { tenant, wallet_id } => touched.wallet(tenant, wallet_id),
                AnswerKey::Owner {
                    tenant,
                    owner_type,
                    owner_id,
                } => {
                    touched.owner(tenant, owner_type, owner_id)
                        || answer.iter().any(|w| touched.wallet(tenant, &w.wallet_id))
                }
            })
            .map(|(key, _)| key.clone())
            .collect();
        for key in stale {
            inner.1.remove(&key);
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletView {
    pub wallet_id: String,
    pub owner_type: OwnerType,
    pub owner_id: String,
    pub wallet_type: WalletType,
    pub network: String,
    pub address: String,
    pub explorer_url: Option<String>,
    pub status: WalletStatus,
    pub created_at: String,
    pub updated_at: String,
    pub version: u64,
    /// (token, amount) in token order.
    pub balances: Vec<(TokenId, TokenAmount)>,
}

impl Projections {
    /// Wallets matching `filter`, each with its balances, in one query (wallets left-joined
    /// to their balances, grouped here).
    /// Wallets and balances by `filter`: either on a wallet id (`a`, no `b`) or on an
    /// owner (`a` its type, `b` its id), which is also what the answer is cached under.
    async fn wallet_rows(
        &self,
        tenant: &str,
        filter: &str,
        a: &str,
        b: Option<&str>,
    ) -> Result<Arc<Vec<WalletView>>> {
        let key = match b {
            Some(owner_id) => AnswerKey::Owner {
                tenant: tenant.to_string(),
                owner_type: a.to_string(),
                owner_id: owner_id.to_string(),
            },
            None => AnswerKey::Wallet {
                tenant: tenant.to_string(),
                wallet_id: a.to_string(),
            },
        };
        let generation = match self.balance_cache().get(&key) {
            Ok(hit) => return Ok(hit),
            Err(generation) => generation,
        };
        let sql = self.q(&format!(
            "SELECT w.wallet_id, w.owner_type, w.owner_id, w.wallet_type, w.network, w.address, w.explorer_url,
                    w.status, w.created_at, w.updated_at, w.version, b.token, b.amount
               FROM rm_wallets w
               LEFT JOIN rm_balances b ON b.tenant = w.tenant AND b.wallet_id = w.wallet_id
              WHERE w.tenant = $1 AND {filter}
              ORDER BY w.created_at, w.wallet_id, b.token"
        ));
        let mut query = sqlx::query(&sql).bind(tenant).bind(a);
        if let Some(b) = b {
            query = query.bind(b);
        }
        let rows = query.fetch_all(self.pool()).await?;
        let mut out: Vec<WalletView> = Vec::new();
        for r in rows {
            let wallet_id: String = r.try_get("wallet_id")?;
            let balance = match r.try_get::<Option<String>, _>("token")? {
                Some(token) => Some((
                    parsed("token", &token, |t| TokenId::parse(t).ok())?,
                    parsed("amount", &r.try_get::<String, _>("amount")?, |a| {
                        TokenAmount::parse(a).ok()
                    })?,
                )),
                None => None,
            };
            if let Some(last) = out.last_mut().filter(|w| w.wallet_id == wallet_id) {
                last.balances.extend(balance);
                continue;
            }
            out.push(WalletView {
                wallet_id,
                owner_type: parsed(
                    "owner_type",
                    &r.try_get::<String, _>("owner_type")?,
                    OwnerType::parse,
                )?,
                owner_id: r.try_get("owner_id")?,
                wallet_type: parsed(
                    "wallet_type",
                    &r.try_get::<String, _>("wallet_type")?,
                    WalletType::parse,
                )?,
                network: r.try_get("network")?,
                address: r.try_get("address")?,
                explorer_url: r.try_get("explorer_url")?,
                status: parsed(
                    "status",
                    &r.try_get::<String, _>("status")?,
                    WalletStatus::parse,
                )?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
                version: crate::queries::count(&r, "version")?,
                balances: balance.into_iter().collect(),
            });
        }
        let out = Arc::new(out);
        self.balance_cache().put(key, generation, out.clone());
        Ok(out)
    }

    /// The wallets of one owner (`owner_type` is user, business or tenant).
    pub async fn wallets_of(
        &self,
        tenant: &str,
        owner_type: &str,
        owner_id: &str,
    ) -> Result<Arc<Vec<WalletView>>> {
        self.wallet_rows(
            tenant,
            "w.owner_type = $2 AND w.owner_id = $3",
            owner_type,
            Some(owner_id),
        )
        .await
    }

    pub async fn wallet(&self, tenant: &str, wallet_id: &str) -> Result<Option<WalletView>> {
        Ok(self
            .wallet_rows(tenant, "w.wallet_id = $2", wallet_id, None)
            .await?
            .last()
            .cloned())
    }
}

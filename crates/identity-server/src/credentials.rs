//! Password hashing (argon2id, OWASP parameters) and verification, including migrated
//! SHA-1 credentials. Hashing is slow and memory-hard on purpose (about 19 MiB each), so it
//! runs on a few dedicated threads of their own, in Linux's idle scheduling class
//! (`SCHED_IDLE`): logins queue for those threads instead of occupying the async workers or
//! the blocking pool, memory stays bounded by the number of threads, and on a busy machine
//! the balance commands get the CPU first: a request thread that wakes up preempts a hashing
//! thread at once, where a nice-19 thread would keep the core for the rest of its slice.
//!
//! The queue in front of those threads is bounded: a check that finds it full is refused at
//! once (RESOURCE_EXHAUSTED, `HASHING_BUSY`), and a queued job whose caller has gone (its
//! deadline passed, it hung up) is dropped without hashing.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{Output, ParamsString, PasswordHash, Salt, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use base64::Engine as _;
use identity_domain::user::{Credential, CredentialVerifier, Secret};
use identity_domain::DomainError;
use sha1::{Digest as _, Sha1};

use crate::error::{ApiError, ApiResult};

/// Work for a hashing thread, given that thread's argon2 memory to reuse.
type Job = Box<dyn FnOnce(&mut Vec<Block>) + Send>;

/// The largest argon2 memory a hashing thread keeps between jobs (64 MiB); a stored hash
/// with a higher memory cost gets a buffer of its own, freed afterwards.
const MAX_KEPT_BLOCKS: usize = 64 * 1024;

/// Hashes and verifies passwords on dedicated low-priority threads.
#[derive(Debug, Clone)]
pub struct Passwords {
    jobs: tokio::sync::mpsc::Sender<Job>,
    /// argon2 computations done (hashes and checks), for tests and `/metrics`.
    done: Arc<AtomicU64>,
}

impl Passwords {
    /// Starts `threads` hashing threads (at least one) behind a queue of `queue` jobs.
    pub fn new(threads: usize, queue: usize) -> Self {
        let (jobs, queue) = tokio::sync::mpsc::channel::<Job>(queue.max(1));
        let queue = Arc::new(std::sync::Mutex::new(queue));
        for n in 0..threads.max(1) {
            let queue = queue.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("password-hasher-{n}"))
                .spawn(move || {
                    lower_priority();
                    // Allocated once and reused: a fresh 19 MiB per hash means page faults
                    // and unmapping on every login, which stalls the whole process.
                    let mut memory: Vec<Block> = Vec::new();
                    loop {
                        let job = match queue.lock() {
                            Ok(mut q) => q.blocking_recv(),
                            Err(_) => return,
                        };
                        match job {
                            Some(job) => {
                                job(&mut memory);
                            }
                            None => return, // every `Passwords` is gone
                        }
                    }
                });
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start a password hashing thread");
            }
        }
        Self {
            jobs,
            done: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many argon2 computations this instance has run.
    pub fn computed(&self) -> u64 {
        self.done.load(Ordering::Relaxed)
    }

    /// Runs `f` on a hashing thread and waits for its answer without blocking a worker;
    /// refused at once when the queue is full.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Block>) -> T + Send + 'static,
    ) -> Result<T, DomainError> {
        let (answer, result) = tokio::sync::oneshot::channel();
        let done = self.done.clone();
        let job: Job = Box::new(move |memory| {
            if answer.is_closed() {
                return; // the caller has gone: spend nothing on it
            }
            done.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("identity_password_hashes_total").increment(1);
            let _ = answer.send(f(memory));
        });
        self.jobs.try_send(job).map_err(|e| match e {
            tokio::sync::mpsc::error::TrySendError::Full(_) => {
                metrics::counter!("identity_password_queue_refusals_total").increment(1);
                DomainError::CredentialsBusy
            }
            tokio::sync::mpsc::error::TrySendError::Closed(_) => {
                DomainError::CredentialsUnavailable
            }
        })?;
        result
            .await
            .map_err(|_| DomainError::CredentialsUnavailable)
    }

    async fn hash_phc(&self, password: &Secret) -> Result<String, DomainError> {
        let password = password.clone();
        self.run(move |memory| hash_now(memory, &password))
            .await?
            .map_err(|e| {
                tracing::error!(error = %e, "password hashing failed");
                DomainError::CredentialsUnavailable
            })
    }

    /// An argon2id PHC string for the password.
    pub async fn hash(&self, password: &Secret) -> ApiResult<String> {
        self.hash_phc(password).await.map_err(ApiError::from)
    }

    async fn check(&self, credential: &Credential, password: &Secret) -> Result<bool, DomainError> {
        let credential = credential.clone();
        let password = password.clone();
        self.run(move |memory| verify_now(memory, &credential, &password))
            .await
    }
}

/// Moves the calling thread to the idle scheduling class: it runs only on CPU time nothing
/// else wants. A failure only costs the other calls some latency, so it is logged, not fatal.
fn lower_priority() {
    use thread_priority::unix::{
        set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
        ThreadSchedulePolicy,
    };
    use thread_priority::ThreadPriority;
    let result = set_thread_priority_and_policy(
        thread_native_id(),
        ThreadPriority::Min,
        ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
    );
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot lower the priority of a password hashing thread");
    }
}

/// argon2 of `password` with `salt` into `out`, in `memory` (grown as needed, kept up to
/// [`MAX_KEPT_BLOCKS`]).
fn argon2_into(
    memory: &mut Vec<Block>,
    argon: &Argon2<'_>,
    blocks: usize,
    password: &[u8],
    salt: &Salt<'_>,
    out: &mut [u8],
) -> Result<(), String> {
    let mut salt_buf = [0u8; 64];
    let salt = salt.decode_b64(&mut salt_buf).map_err(|e| e.to_string())?;
    if blocks > MAX_KEPT_BLOCKS {
        let mut own = vec![Block::new(); blocks];
        return argon
            .hash_password_into_with_memory(password, salt, out, &mut own[..])
            .map_err(|e| e.to_string());
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    argon
        .hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
        .map_err(|e| e.to_string())
}

/// A new argon2id PHC string (default, OWASP-recommended parameters).
fn hash_now(memory: &mut Vec<Block>, password: &Secret) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    let params = Params::default();
    let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    argon2_into(
        memory,
        &argon,
        params.block_count(),
        password.expose().as_bytes(),
        &salt.as_salt(),
        &mut out,
    )?;
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(&params).map_err(|e| e.to_string())?,
        salt: Some(salt.as_salt()),
        hash: Some(Output::new(&out).map_err(|e| e.to_string())?),
    };
    Ok(phc.to_string())
}

/// Checks `password` against an argon2 PHC string, with the parameters it names.
fn verify_phc(memory: &mut Vec<Block>, phc: &str, password: &Secret) -> Result<bool, String> {
    let parsed = PasswordHash::new(phc).map_err(|e| e.to_string())?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|e| e.to_string())?;
    let version = parsed
        .version
        .map(Version::try_from)
        .transpose()
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    let params = Params::try_from(&parsed).map_err(|e| e.to_string())?;
    let (Some(salt), Some(expected)) = (parsed.salt, parsed.hash) else {
        return Ok(false);
    };
    let argon = Argon2::new(algorithm, version, params.clone());
    let mut out = vec![0u8; expected.len()];
    argon2_into(
        memory,
        &argon,
        params.block_count(),
        password.expose().as_bytes(),
        &salt,
        &mut out,
    )?;
    // Output's equality is constant-time.
    Ok(Output::new(&out).map_err(|e| e.to_string())? == expected)
}

fn verify_now(memory: &mut Vec<Block>, credential: &Credential, password: &Secret) -> bool {
    match credential {
        Credential::Modern { phc } => verify_phc(memory, phc, password).unwrap_or(false),
        Credential::LegacySha1 { salt, digest } => {
            let mut h = Sha1::new();
            h.update(salt.as_bytes());
            h.update(password.expose().as_bytes());
            let computed = base64::engine::general_purpose::STANDARD.encode(h.finalize());
            computed.len() == digest.len()
                && computed
                    .bytes()
                    .zip(digest.bytes())
                    .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                    == 0
        }
    }
}

impl CredentialVerifier for Passwords {
    fn verify<'a>(
        &'a self,
        credential: &'a Credential,
        password: &'a Secret,
    ) -> Pin<Box<dyn Future<Output = Result<bool, DomainError>> + Send + 'a>> {
        Box::pin(self.check(credential, password))
    }

    fn hash<'a>(
        &'a self,
        password: &'a Secret,
    ) -> Pin<Box<dyn Future<Output = Result<String, DomainError>> + Send + 'a>> {
        Box::pin(self.hash_phc(password))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_a_gone_caller_costs_nothing() {
        let p = Passwords::new(1, 1);
        let c = Credential::Modern {
            phc: p.hash(&Secret::new("first one")).await.unwrap(),
        };
        let before = p.computed();
        // Occupy the thread, fill the one queue slot, then ask for more.
        let busy = {
            let p = p.clone();
            let c = c.clone();
            tokio::spawn(async move { p.check(&c, &Secret::new("x")).await })
        };
        let mut refused = 0;
        let mut queued = Vec::new();
        for _ in 0..20 {
            let p = p.clone();
            let c = c.clone();
            let call = tokio::spawn(async move { p.check(&c, &Secret::new("y")).await });
            tokio::task::yield_now().await;
            queued.push(call);
        }
        for call in queued {
            match call.await.unwrap() {
                Err(DomainError::CredentialsBusy) => refused += 1,
                Ok(_) => {}
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(refused > 0, "a full queue refuses");
        busy.await.unwrap().unwrap();
        assert!(p.computed() - before < 21);

        // A caller that gives up before its turn is never hashed for (room in the queue now,
        // so it waits behind the blocker instead of being refused).
        let p = Passwords::new(1, 4);
        let before = p.computed();
        let blocker = {
            let p = p.clone();
            let c = c.clone();
            tokio::spawn(async move { p.check(&c, &Secret::new("x")).await })
        };
        tokio::task::yield_now().await;
        let gone = tokio::time::timeout(
            std::time::Duration::from_millis(1),
            p.check(&c, &Secret::new("z")),
        )
        .await;
        assert!(gone.is_err(), "timed out while waiting");
        blocker.await.unwrap().unwrap();
        // One more check runs after the abandoned job was skipped.
        p.check(&c, &Secret::new("w")).await.unwrap();
        assert_eq!(p.computed() - before, 2, "the abandoned job was skipped");
    }

    #[tokio::test]
    async fn a_hashed_password_verifies_and_a_wrong_one_does_not() {
        let p = Passwords::new(2, 8);
        let phc = p.hash(&Secret::new("correct horse")).await.unwrap();
        assert!(phc.starts_with("$argon2id$"));
        let c = Credential::Modern { phc };
        assert!(p.check(&c, &Secret::new("correct horse")).await.unwrap());
        assert!(!p.check(&c, &Secret::new("wrong")).await.unwrap());
    }

    #[test]
    fn our_hashes_and_the_argon2_crates_verify_each_other() {
        use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
        let mut memory = Vec::new();
        let ours = hash_now(&mut memory, &Secret::new("tr0ub4dor")).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default()
            .verify_password(b"tr0ub4dor", &parsed)
            .is_ok());
        assert!(Argon2::default()
            .verify_password(b"other", &parsed)
            .is_err());
        // A hash made elsewhere, with other parameters, verifies here (memory reused).
        let params = Params::new(8 * 1024, 3, 1, None).unwrap();
        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"tr0ub4dor", &salt)
            .unwrap()
            .to_string();
        assert!(verify_phc(&mut memory, &theirs, &Secret::new("tr0ub4dor")).unwrap());
        assert!(!verify_phc(&mut memory, &theirs, &Secret::new("tr0ub4dr")).unwrap());
        assert!(verify_phc(&mut memory, &ours, &Secret::new("tr0ub4dor")).unwrap());
    }

    #[tokio::test]
    async fn a_legacy_sha1_credential_verifies() {
        // base64(sha1("s4lt" + "pw"))
        let mut h = Sha1::new();
        h.update(b"s4ltpw");
        let digest = base64::engine::general_purpose::STANDARD.encode(h.finalize());
        let c = Credential::LegacySha1 {
            salt: "s4lt".into(),
            digest,
        };
        let p = Passwords::new(1, 8);
        assert!(p.check(&c, &Secret::new("pw")).await.unwrap());
        assert!(!p.check(&c, &Secret::new("px")).await.unwrap());
    }
}

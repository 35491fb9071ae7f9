//! The application: bind, wire the services, serve until told to stop.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use identity_proto::v1::admin_service_server::AdminServiceServer;
use identity_proto::v1::audit_service_server::AuditServiceServer;
use identity_proto::v1::auth_service_server::AuthServiceServer;
use identity_proto::v1::identification_service_server::IdentificationServiceServer;
use identity_proto::v1::me_service_server::MeServiceServer;
use identity_proto::v1::projection_service_server::ProjectionServiceServer;
use identity_proto::v1::status_tier_service_server::StatusTierServiceServer;
use identity_proto::v1::tenant_service_server::TenantServiceServer;
use identity_proto::v1::user_service_server::UserServiceServer;
use identity_proto::v1::wallet_service_server::WalletServiceServer;
use identity_store::{EventLog, StoreConfig, Upcasters};
use tokio::net::TcpListener;
use tonic::transport::Server;

use crate::api::admin::AdminApi;
use crate::api::audit::AuditApi;
use crate::api::auth::AuthApi;
use crate::api::identification::IdentificationApi;
use crate::api::me::MeApi;
use crate::api::projection::ProjectionApi;
use crate::api::status_tier::StatusTierApi;
use crate::api::tenant::TenantApi;
use crate::api::user::UserApi;
use crate::api::wallet::WalletApi;
use crate::core::Core;
use crate::settings::Settings;

#[derive(Debug)]
pub struct Application {
    tls: Option<tonic::transport::ServerTlsConfig>,
    listener: TcpListener,
    addr: SocketAddr,
    admin_listener: TcpListener,
    admin_addr: SocketAddr,
    core: Core,
}

impl Application {
    /// Opens the store (running migrations) and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_upcasters(settings, Upcasters::standard()).await
    }

    /// [`Application::build`] reading the log through these upcasters instead of the
    /// domain's own (a test that stores an event in an old shape adds one).
    pub async fn build_with_upcasters(
        settings: Settings,
        upcasters: Upcasters,
    ) -> anyhow::Result<Self> {
        let log = EventLog::open_with_upcasters(
            &StoreConfig {
                url: settings.database_url.clone(),
                max_connections: settings.db_max_connections,
                cache_capacity: settings.aggregate_cache,
            },
            upcasters,
        )
        .await
        .with_context(|| {
            format!(
                "opening the event store at {}",
                settings.database_url_for_logs()
            )
        })?
        .with_master_key(settings.master_key()?)
        .with_previous_master_keys(settings.previous_master_keys()?);
        // A store written before keyed ids would let a value be claimed twice (once under
        // its old id, once under its keyed one): it must be brought forward first.
        let unkeyed = log.unkeyed_claims_held().await?;
        if unkeyed > 0 {
            anyhow::bail!(
                "the store holds {unkeyed} claim(s) under ids written before keyed ids: run \
                 `identity-admin seal-forward` once (with no replica serving), then start again"
            );
        }
        // Finish any erasure a crash interrupted, and re-erase after a backup is restored.
        let finished = log
            .destroy_erased_keys()
            .await
            .context("destroying the data keys of erased people")?;
        if finished > 0 {
            tracing::info!(keys = finished, "destroyed the data keys of erased people");
        }
        let tls = settings.tls_cert_file.is_some() || settings.tls_key_file.is_some();
        if !settings.listen_addr.ip().is_loopback() && !tls {
            if settings.allow_plaintext {
                tracing::warn!(addr = %settings.listen_addr, "serving plaintext gRPC beyond loopback (IDENTITY_ALLOW_PLAINTEXT): credentials travel unencrypted");
            } else {
                anyhow::bail!(
                    "{} is beyond loopback: configure IDENTITY_TLS_CERT_FILE and IDENTITY_TLS_KEY_FILE, or set IDENTITY_ALLOW_PLAINTEXT=true",
                    settings.listen_addr
                );
            }
        }
        let tls = tls_config(&settings)?;
        let access = crate::access::bootstrap::access(&log, &settings)
            .await
            .context("setting up authentication")?;
        access
            .directory
            .spawn_refresh(Duration::from_millis(settings.access_refresh_ms));
        let listener = TcpListener::bind(settings.listen_addr)
            .await
            .with_context(|| format!("binding {}", settings.listen_addr))?;
        let addr = listener.local_addr()?;
        let admin_listener = TcpListener::bind(settings.admin_addr)
            .await
            .with_context(|| format!("binding the admin port {}", settings.admin_addr))?;
        let admin_addr = admin_listener.local_addr()?;
        let query_timeout = Duration::from_millis(settings.query_timeout_ms);
        let log = log.with_query_timeout(query_timeout);
        let projections =
            identity_projections::Projections::open_with_query_timeout(log.clone(), query_timeout)
                .await
                .context("opening the read models")?
                .with_read_cache(settings.read_cache);
        projections.spawn_all();
        crate::observability::prometheus();
        crate::observability::spawn_gauges(log.clone(), projections.clone());
        tracing::info!(%addr, %admin_addr, store = log.kind(), database = %settings.database_url_for_logs(), "identity service ready");
        let checkpoints = crate::checkpoints::Checkpoints::load(&settings)
            .context("loading the checkpoint keys")?;
        let factories = crate::factories::Factories::from_settings(&settings)?;
        let mut core = Core::new(log, Arc::new(settings), projections, access);
        core.checkpoints = checkpoints;
        core.factories = factories;
        Ok(Self {
            tls,
            listener,
            addr,
            admin_listener,
            admin_addr,
            core,
        })
    }

    /// The bound port (useful when the settings asked for port 0).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound admin HTTP address (`/metrics`, `/healthz`, `/readyz`).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The read models and their projectors (for tests and admin tools).
    pub fn projections(&self) -> identity_projections::Projections {
        self.core.projections.clone()
    }

    /// The password hashers (their count of computations, for tests).
    pub fn passwords(&self) -> crate::credentials::Passwords {
        self.core.passwords.clone()
    }

    /// The event log.
    pub fn event_log(&self) -> identity_store::EventLog {
        self.core.log.clone()
    }

    /// Serves until SIGINT or SIGTERM, then finishes in-flight calls and returns.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `stop` completes, then finishes in-flight calls and returns.
    pub async fn run_until(
        self,
        stop: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let max = self.core.settings.max_message_bytes;
        let max_out = self.core.settings.max_response_bytes;
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<UserServiceServer<UserApi>>().await;
        health.set_serving::<WalletServiceServer<WalletApi>>().await;
        health
            .set_serving::<StatusTierServiceServer<StatusTierApi>>()
            .await;
        health
            .set_serving::<IdentificationServiceServer<IdentificationApi>>()
            .await;
        health
            .set_serving::<ProjectionServiceServer<ProjectionApi>>()
            .await;
        health.set_serving::<AuditServiceServer<AuditApi>>().await;
        health.set_serving::<TenantServiceServer<TenantApi>>().await;
        health.set_serving::<AdminServiceServer<AdminApi>>().await;

        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(identity_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        // grpcurl 1.8 speaks only the v1alpha reflection protocol.
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(identity_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;

        let core = self.core.clone();
        let grace = Duration::from_secs(core.settings.shutdown_grace_secs);
        let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async move {
            stop.await;
            let _ = stopping_tx.send(());
        };
        // grpc.health.v1: "liveness" is SERVING while the process runs; the overall status
        // ("") follows readiness, so orchestrators stop routing to a replica whose store is
        // unreachable (not to one whose read models lag: see `readiness`).
        health
            .set_service_status("liveness", tonic_health::ServingStatus::Serving)
            .await;
        let readiness_task = {
            let (health, log) = (health.clone(), core.log.clone());
            tokio::spawn(async move {
                loop {
                    let status = match crate::observability::readiness(&log).await {
                        Ok(()) => tonic_health::ServingStatus::Serving,
                        Err(why) => {
                            tracing::warn!(%why, "not ready");
                            tonic_health::ServingStatus::NotServing
                        }
                    };
                    health.set_service_status("", status).await;
                    tokio::time::sleep(Duration::from_secs(2)).await;
                }
            })
        };
        let relay_task = tokio::spawn(core.delivery.clone().run());
        let checkpoint_task = match (
            &core.checkpoints.signer,
            core.settings.checkpoint_interval_ms,
        ) {
            (Some(signer), every) if every > 0 => Some(tokio::spawn(
                core.log
                    .clone()
                    .run_checkpoints(signer.clone(), Duration::from_millis(every)),
            )),
            _ => None,
        };
        let admin = crate::observability::admin_router(core.log.clone(), core.access.jwks.clone());
        let admin_listener = self.admin_listener;
        let admin_tls = crate::tls::acceptor(&core.settings)?;
        let admin_task = tokio::spawn(async move {
            let served = match admin_tls {
                Some(acceptor) => match crate::tls::TlsListener::new(admin_listener, acceptor) {
                    Ok(listener) => axum::serve(listener, admin).await,
                    Err(e) => Err(e),
                },
                None => axum::serve(admin_listener, admin).await,
            };
            if let Err(e) = served {
                tracing::error!(error = %e, "admin HTTP server stopped");
            }
        });
        let mut builder = Server::builder();
        if let Some(tls) = self.tls {
            builder = builder.tls_config(tls).context("configuring TLS")?;
        }
        let reflection = core.settings.reflection;
        let serve = builder
            .timeout(Duration::from_secs(30))
            .layer(crate::observability::RequestLayer::new(core.access.clone()))
            .add_service(health_service)
            .add_optional_service(reflection.then_some(reflection_v1))
            .add_optional_service(reflection.then_some(reflection_v1alpha))
            .add_service(
                UserServiceServer::new(UserApi::new(core.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max_out),
            )
            .add_service(
                WalletServiceServer::new(WalletApi::new(core.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max_out),
            )
            .add_service(
                StatusTierServiceServer::new(StatusTierApi::new(core.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max_out),
            )
            .add_service(
                IdentificationServiceServer::new(IdentificationApi::new(core.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max_out),
            )
            .add_service(
                ProjectionServiceServer::new(ProjectionApi::new(core.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max_out),
            )
            .add_service(
                AuditServiceServer::new(AuditApi::new(core.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max_out),
            )
            .add_service(
                TenantServiceServer::new(TenantApi::new(core.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max_out),
            )
            .add_service(
                AdminServiceServer::new(AdminApi::new(core.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max_out),
            )
            .add_service(
                AuthServiceServer::new(AuthApi::new(core.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max_out),
            )
            .add_service(
                MeServiceServer::new(MeApi::new(core.clone()))
                    .max_decoding_message_size(max)
                    .max_encoding_message_size(max_out),
            )
            .serve_with_incoming_shutdown(
                // Our own listener (bound early to report its port), so tonic's own
                // TCP_NODELAY default does not apply: without it, small responses waited for
                // delayed ACKs (a 40–50 ms p99.9 in every benchmark row).
                tonic::transport::server::TcpIncoming::from(self.listener).with_nodelay(Some(true)),
                stop,
            );
        // In-flight calls get `grace` to finish; an idle client holding its connection open
        // must not keep the process alive past that.
        let deadline = async move {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(grace).await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let result = tokio::select! {
            r = serve => {
                tracing::info!("stopped accepting calls; in-flight calls finished");
                r
            }
            () = deadline => {
                tracing::warn!(grace_secs = grace.as_secs(), "grace period over; closing remaining connections");
                Ok(())
            }
        };
        admin_task.abort();
        readiness_task.abort();
        relay_task.abort();
        if let Some(task) = checkpoint_task {
            task.abort();
        }
        core.log.close().await;
        result.context("serving gRPC")
    }
}

/// The TLS configuration the settings ask for, if any.
fn tls_config(settings: &Settings) -> anyhow::Result<Option<tonic::transport::ServerTlsConfig>> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let read =
        |p: &std::path::Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let (cert, key) = match (&settings.tls_cert_file, &settings.tls_key_file) {
        (None, None) => {
            if settings.tls_client_ca_file.is_some() {
                anyhow::bail!("IDENTITY_TLS_CLIENT_CA_FILE needs IDENTITY_TLS_CERT_FILE and IDENTITY_TLS_KEY_FILE");
            }
            return Ok(None);
        }
        (Some(c), Some(k)) => (read(c)?, read(k)?),
        _ => anyhow::bail!("set both IDENTITY_TLS_CERT_FILE and IDENTITY_TLS_KEY_FILE"),
    };
    let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    if let Some(ca) = &settings.tls_client_ca_file {
        tls = tls.client_ca_root(Certificate::from_pem(read(ca)?));
    }
    Ok(Some(tls))
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received; shutting down"),
        () = term => tracing::info!("SIGTERM received; shutting down"),
    }
}

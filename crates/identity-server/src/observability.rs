//! Metrics (Prometheus text on the admin HTTP port) and the admin endpoints `/metrics`,
//! `/healthz` (the process is alive), `/readyz` (the store answers) and
//! `/.well-known/jwks.json` (the public keys of the tokens the service signs).
//!
//! Metric names: `identity_grpc_requests_total` and `identity_grpc_request_duration_seconds`
//! (per method and code), `identity_events_appended_total` (per aggregate and event type),
//! `identity_projection_position`, `identity_projection_lag`, `identity_projection_leader`,
//! `identity_projection_consecutive_failures` (per read model), `identity_db_pool_connections`
//! (per state).

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use identity_projections::{Projection, Projections};
use identity_store::EventLog;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The process-wide Prometheus recorder (installed once; later calls share it).
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                ])
                .map(PrometheusBuilder::build_recorder)
                .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
            let handle = recorder.handle();
            // Another recorder may exist (a test process builds several servers): then this
            // handle still renders, just without the other recorder's metrics.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// The one request layer: opens the request's span, admits the caller (credential, tenant,
/// permission: `access`) and hands the handler its [`crate::access::Caller`], then records
/// count and latency per gRPC method and status code.
#[derive(Debug, Clone)]
pub struct RequestLayer {
    access: crate::access::Access,
}

impl RequestLayer {
    pub fn new(access: crate::access::Access) -> Self {
        Self { access }
    }
}

impl<S> tower::Layer<S> for RequestLayer {
    type Service = GrpcMetrics<S>;
    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            access: self.access.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    access: crate::access::Access,
}

/// Every method path this server serves (`identity.v1.UserService/RegisterUser`, health,
/// reflection), from the descriptor sets it registers.
pub fn known_methods() -> &'static std::collections::HashSet<String> {
    static KNOWN: OnceLock<std::collections::HashSet<String>> = OnceLock::new();
    KNOWN.get_or_init(|| {
        let mut known: std::collections::HashSet<String> = [
            identity_proto::FILE_DESCRIPTOR_SET,
            tonic_health::pb::FILE_DESCRIPTOR_SET,
        ]
        .into_iter()
        .flat_map(identity_proto::method_names)
        .collect();
        for reflection in ["grpc.reflection.v1", "grpc.reflection.v1alpha"] {
            known.insert(format!(
                "{reflection}.ServerReflection/ServerReflectionInfo"
            ));
        }
        known
    })
}

/// A bounded label for a request path: only the methods this server serves get their own
/// label; any other path (a flood of random ones included) shares "unknown".
fn method_label(path: &str) -> String {
    let method = path.trim_start_matches('/');
    if known_methods().contains(method) {
        method.to_string()
    } else {
        "unknown".to_string()
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for GrpcMetrics<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send,
    B: Send + 'static,
    RB: Default,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        use tracing::Instrument as _;
        let path = request.uri().path();
        let method = method_label(path);
        let span = crate::telemetry::request_span(&method, request.headers());
        let started = Instant::now();
        let rule = crate::access::permission::rule(path);
        let open = crate::access::permission::is_open(path, self.access.reflection);
        // The clone waits for the next call; the service that was polled ready serves this one.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let access = self.access.clone();
        Box::pin(async move {
            let admitted = match rule {
                _ if open => Ok(None),
                Some(rule) => match access.admit(rule, request.headers()).await {
                    Ok(mut caller) => {
                        caller.client = client_ip(&request);
                        request.extensions_mut().insert(std::sync::Arc::new(caller));
                        Ok(Some(rule.method))
                    }
                    Err(e) => Err(tonic::Status::from(e)),
                },
                // Deny by default: a path without a rule never reaches a handler.
                None => Err(tonic::Status::unimplemented("no such method")),
            };
            let mut result = match admitted {
                Ok(Some(rpc)) => {
                    inner
                        .call(request)
                        .instrument(crate::telemetry::rpc_span(rpc))
                        .await
                }
                Ok(None) => inner.call(request).await,
                Err(status) => Ok(status.into_http()),
            };
            if let Ok(r) = &mut result {
                crate::wire::recode(r.headers_mut());
            }
            // Errors travel as trailers-only responses with grpc-status in the headers; a
            // success carries its status in the trailers, so no header means OK.
            let code = match &result {
                Ok(r) => r
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<i32>().ok())
                    .unwrap_or(0),
                Err(_) => 2,
            };
            let code = crate::error::code_name(tonic::Code::from(code));
            metrics::counter!("identity_grpc_requests_total", "method" => method.clone(), "code" => code).increment(1);
            metrics::histogram!("identity_grpc_request_duration_seconds", "method" => method, "code" => code)
                .record(started.elapsed().as_secs_f64());
            result
        }
        .instrument(span))
    }
}

/// Samples projector and pool gauges every second until the process ends.
pub fn spawn_gauges(log: EventLog, projections: Projections) {
    tokio::spawn(async move {
        loop {
            if let Ok(head) = log.head_position().await {
                for p in Projection::ALL {
                    let position = projections.cursor(p).position;
                    metrics::gauge!("identity_projection_position", "projection" => p.name())
                        .set(position as f64);
                    metrics::gauge!("identity_projection_lag", "projection" => p.name())
                        .set(head.saturating_sub(position) as f64);
                    metrics::gauge!("identity_projection_leader", "projection" => p.name())
                        .set(if projections.is_leader(p) { 1.0 } else { 0.0 });
                    // Failed attempts in a row: an event the projector cannot apply keeps
                    // this growing (alert on it); 0 when healthy.
                    metrics::gauge!("identity_projection_consecutive_failures", "projection" => p.name())
                        .set(f64::from(projections.health(p).consecutive_failures));
                }
            }
            let (size, idle) = log.pool_stats();
            metrics::gauge!("identity_db_pool_connections", "state" => "idle").set(idle as f64);
            metrics::gauge!("identity_db_pool_connections", "state" => "in_use")
                .set((size as usize).saturating_sub(idle) as f64);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

/// Whether the service can take traffic: the store answers. A lagging read model does not
/// count against it: one long transaction anywhere in the cluster holds back every replica's
/// feed, and taking them all out of rotation would stop writes too. Lag is a metric
/// (`identity_projection_lag`), and only a query that asked for a position not yet reached
/// fails (READ_MODEL_BEHIND).
pub async fn readiness(log: &EventLog) -> Result<(), String> {
    log.ping().await.map_err(|e| format!("store: {e}"))
}

/// The admin HTTP router: `/metrics`, `/healthz`, `/readyz`.
pub fn admin_router(log: EventLog, jwks: String) -> axum::Router {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let handle = prometheus();
    axum::Router::new()
        .route("/metrics", get(move || std::future::ready(handle.render())))
        // The public keys of the tokens this service signs: other services verify them alone.
        .route(
            "/.well-known/jwks.json",
            get(move || {
                std::future::ready(([(header::CONTENT_TYPE, "application/json")], jwks.clone()))
            }),
        )
        .route("/healthz", get(|| std::future::ready("ok\n")))
        .route(
            "/readyz",
            get(move || {
                let log = log.clone();
                async move {
                    match readiness(&log).await {
                        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
                        Err(why) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: {why}\n"),
                        ),
                    }
                }
            }),
        )
}

/// The client's IP address, from the connection info tonic's transport attaches.
fn client_ip<B>(request: &http::Request<B>) -> Option<std::net::IpAddr> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let ext = request.extensions();
    ext.get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
        })
        .map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_paths_share_one_label() {
        assert_eq!(
            method_label("/identity.v1.UserService/GetUser"),
            "identity.v1.UserService/GetUser"
        );
        assert_eq!(
            method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        // Inside our own package too: a flood of invented method names must not grow the
        // label set.
        for junk in [
            "/random/junk",
            "/identity.v1.UserService/NoSuchMethod",
            "/identity.v1.Nope/X",
        ] {
            assert_eq!(method_label(junk), "unknown", "{junk}");
        }
    }
}

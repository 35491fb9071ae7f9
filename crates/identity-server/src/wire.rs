//! Gives transport-level failures the codes gRPC's status table prescribes. tonic answers
//! a message over the size limit with OUT_OF_RANGE and a message it cannot decode (a
//! truncated field, a Struct nested past prost's recursion limit) with INTERNAL; to a
//! caller both are its own bad input: RESOURCE_EXHAUSTED and INVALID_ARGUMENT. The layer
//! rewrites those trailers-only answers before the metrics layer counts them.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::HeaderValue;

/// The tower layer; see the module doc.
#[derive(Debug, Clone, Copy, Default)]
pub struct WireCodesLayer;

impl<S> tower::Layer<S> for WireCodesLayer {
    type Service = WireCodes<S>;
    fn layer(&self, inner: S) -> Self::Service {
        WireCodes { inner }
    }
}

#[derive(Debug, Clone)]
pub struct WireCodes<S> {
    inner: S,
}

/// The code a transport failure should carry, given tonic's code and (percent-encoded)
/// message; `None` leaves the answer as it is.
fn corrected(code: &[u8], message: &[u8]) -> Option<&'static str> {
    let starts = |prefix: &str| message.starts_with(prefix.as_bytes());
    match code {
        b"11" if starts("Error,%20decoded%20message%20length%20too%20large") => Some("8"),
        b"13" if starts("failed%20to%20decode%20Protobuf%20message") => Some("3"),
        _ => None,
    }
}

impl<S, B, RB> tower::Service<http::Request<B>> for WireCodes<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut response = response.await?;
            let headers = response.headers_mut();
            let fix = match (headers.get("grpc-status"), headers.get("grpc-message")) {
                (Some(code), Some(message)) => corrected(code.as_bytes(), message.as_bytes()),
                _ => None,
            };
            if let Some(code) = fix {
                headers.insert("grpc-status", HeaderValue::from_static(code));
            }
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::corrected;

    #[test]
    fn only_transport_failures_are_recoded() {
        assert_eq!(
            corrected(
                b"11",
                b"Error,%20decoded%20message%20length%20too%20large:%20found%205%20bytes"
            ),
            Some("8")
        );
        assert_eq!(
            corrected(
                b"13",
                b"failed%20to%20decode%20Protobuf%20message:%20recursion%20limit%20reached"
            ),
            Some("3")
        );
        assert_eq!(corrected(b"13", b"internal%20error"), None);
        assert_eq!(corrected(b"11", b"page%20out%20of%20range"), None);
    }
}

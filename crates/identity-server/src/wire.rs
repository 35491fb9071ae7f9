//! Gives transport-level failures the codes gRPC's status table prescribes. tonic answers
//! a message over the size limit with OUT_OF_RANGE and a message it cannot decode (a
//! truncated field, a Struct nested past prost's recursion limit) with INTERNAL; to a
//! caller both are its own bad input: RESOURCE_EXHAUSTED and INVALID_ARGUMENT. `recode`
//! rewrites those trailers-only answers, and the metrics layer counts them as rewritten.

use http::{HeaderMap, HeaderValue};

/// Rewrites the status of a trailers-only answer in place when it is one of tonic's
/// transport-level codes for the caller's bad input. Called by the request layer
/// (`observability::GrpcMetrics`) before it counts the answer, so it costs no layer of its
/// own on the hot path.
pub fn recode(headers: &mut HeaderMap) {
    let fix = match (headers.get("grpc-status"), headers.get("grpc-message")) {
        (Some(code), Some(message)) => corrected(code.as_bytes(), message.as_bytes()),
        _ => None,
    };
    if let Some(code) = fix {
        headers.insert("grpc-status", HeaderValue::from_static(code));
    }
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

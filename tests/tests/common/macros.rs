//! The call macros of the test kit: a call that must succeed, a call that must fail.

/// Awaits a call that must succeed and gives its message; a failure panics with the call and
/// its status.
macro_rules! ok {
    ($call:expr) => {
        match $call.await {
            Ok(answer) => answer.into_inner(),
            Err(status) => panic!("{} failed: {status:?}", stringify!($call)),
        }
    };
}

/// Awaits a call that must fail with `code` and `reason`, and gives its status.
macro_rules! fails {
    ($call:expr, $code:expr, $reason:expr $(,)?) => {
        assert_error($call.await, $code, $reason)
    };
}

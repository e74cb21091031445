//! Which Kinesis failures are worth retrying, and how long to wait before the next try.

use std::time::Duration;

use aws_sdk_kinesis::{
    error::ProvideErrorMetadata, error::SdkError, operation::put_records::PutRecordsError,
};
use rand::Rng;

/// Exponential backoff with jitter: the wait doubles per attempt up to `max`, and a random
/// half of it is added so that many publishers do not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        let half = exp / 2;
        half + rand::thread_rng().gen_range(Duration::ZERO..=half)
    }
}

/// What a failed attempt means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Try again after a backoff; the label names the reason in metrics.
    Retry(&'static str),
    /// Needs a person: missing stream, no permission, invalid request.
    Fatal(String),
}

/// Per-record `ErrorCode` of a PutRecords response.
pub fn classify_record_error(code: &str, message: Option<&str>) -> Failure {
    match code {
        "ProvisionedThroughputExceededException" => Failure::Retry("throttled"),
        "KMSThrottlingException" => Failure::Retry("kms_throttled"),
        "InternalFailure" | "ServiceUnavailable" | "InternalServerError" => {
            Failure::Retry("internal_failure")
        }
        other => Failure::Fatal(format!("{other}: {}", message.unwrap_or(""))),
    }
}

/// A whole-request failure.
pub fn classify_request_error(err: &SdkError<PutRecordsError>) -> Failure {
    match err {
        SdkError::TimeoutError(_) => Failure::Retry("timeout"),
        SdkError::DispatchFailure(_) => Failure::Retry("connection"),
        SdkError::ResponseError(_) => Failure::Retry("bad_response"),
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            match se.err().code() {
                Some("ProvisionedThroughputExceededException") => Failure::Retry("throttled"),
                Some("KMSThrottlingException") => Failure::Retry("kms_throttled"),
                Some("LimitExceededException") | Some("ThrottlingException") => {
                    Failure::Retry("throttled")
                }
                Some("InternalFailure")
                | Some("ServiceUnavailable")
                | Some("InternalServerError") => Failure::Retry("internal_failure"),
                _ if status >= 500 => Failure::Retry("server_error"),
                _ if status == 429 => Failure::Retry("throttled"),
                code => Failure::Fatal(format!(
                    "{} (HTTP {status}): {}",
                    code.unwrap_or("unknown error"),
                    se.err().message().unwrap_or("")
                )),
            }
        }
        other => Failure::Fatal(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for attempt in 0..20 {
            let d = b.delay(attempt);
            let exp =
                (Duration::from_millis(100) * (1 << attempt.min(16))).min(Duration::from_secs(1));
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d:?}");
        }
    }

    /// Dashboards and alerts know the reasons from `metrics::RETRY_REASONS`, which also
    /// pre-creates their series: a reason given here must be listed there.
    #[test]
    fn every_retry_reason_is_listed_for_metrics() {
        let source = include_str!("retry.rs");
        let mut found = 0;
        for part in source.split("Failure::Retry(\"").skip(1) {
            let reason = part.split('"').next().unwrap_or_default();
            if reason.is_empty() || reason.contains(' ') {
                continue;
            }
            found += 1;
            assert!(
                crate::metrics::RETRY_REASONS.contains(&reason),
                "retry reason {reason} is missing from metrics::RETRY_REASONS"
            );
        }
        assert!(found >= 7, "found only {found} retry reasons");
    }

    #[test]
    fn record_errors() {
        assert_eq!(
            classify_record_error("ProvisionedThroughputExceededException", None),
            Failure::Retry("throttled")
        );
        assert!(matches!(
            classify_record_error("KMSAccessDeniedException", Some("no")),
            Failure::Fatal(_)
        ));
    }
}

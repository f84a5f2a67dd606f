//! What a subscription's options change in its requests: the body a
//! delivery was routed with (`body`, `columns`: shaped when it was routed,
//! so no SQL runs here) and the subscription's extra `headers`. Headers are
//! kept like the secret: never printed, logged or put in an error.

use std::fmt;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio_postgres::Row;

/// The JSON to send for a claimed delivery (a row with `body`, as the
/// claim returns it) of `event` (a row with `payload`): the body its
/// subscription's options made, or else the event itself.
pub fn payload(claimed: &Row, event: &Row) -> String {
    claimed
        .get::<_, Option<String>>("body")
        .unwrap_or_else(|| event.get("payload"))
}

/// A subscription's extra request headers (`walhook.subscriptions.headers`).
#[derive(Clone, Default, PartialEq)]
pub struct Headers(Vec<(HeaderName, HeaderValue)>);

impl Headers {
    /// The headers of a subscription row with a `headers` column (a JSON
    /// object of names and string values, checked when it was stored).
    /// Anything that is not a sendable header is left out rather than
    /// failing every request.
    pub fn from_row(row: &Row) -> Headers {
        Headers::from_json(row.get::<_, Option<serde_json::Value>>("headers"))
    }

    pub fn from_json(json: Option<serde_json::Value>) -> Headers {
        let Some(serde_json::Value::Object(map)) = json else {
            return Headers::default();
        };
        Headers(
            map.into_iter()
                .filter_map(|(name, value)| {
                    let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
                    let mut value = HeaderValue::from_str(value.as_str()?).ok()?;
                    value.set_sensitive(true);
                    Some((name, value))
                })
                .collect(),
        )
    }

    /// Adds the headers to a request's, before walhook's own are set: the
    /// signature headers and content-type always win.
    pub fn apply(&self, headers: &mut HeaderMap) {
        for (name, value) in &self.0 {
            headers.insert(name.clone(), value.clone());
        }
    }
}

/// Names only: the values are often credentials.
impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(name, _)| name))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn headers_are_added_and_never_printed() {
        let headers = Headers::from_json(Some(
            json!({"Authorization": "Bearer s3cr3t", "X-Team": "billing"}),
        ));
        let printed = format!("{headers:?}");
        assert!(printed.contains("authorization"), "{printed}");
        assert!(!printed.contains("s3cr3t"), "{printed}");
        let mut request = HeaderMap::new();
        headers.apply(&mut request);
        assert_eq!(request["authorization"], "Bearer s3cr3t");
        assert_eq!(request["x-team"], "billing");
        assert!(!format!("{request:?}").contains("s3cr3t"));
    }

    #[test]
    fn what_cannot_be_sent_is_left_out() {
        let headers = Headers::from_json(Some(
            json!({"bad name": "x", "X-Number": 3, "X-Line": "a\nb", "X-Ok": "y"}),
        ));
        assert_eq!(format!("{headers:?}"), "[\"x-ok\"]");
        assert_eq!(Headers::from_json(None), Headers::default());
        assert_eq!(Headers::from_json(Some(json!("nope"))), Headers::default());
    }
}

//! The states a delivery goes through, as `walhook.deliveries.state` holds
//! them. Rust code names a state through [`DeliveryState`], never as a
//! string literal, so the set lives in one place next to the database's
//! `delivery_state_known` check (sql/0001_schema.sql).

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

/// The state of one delivery. A delivery is `pending` until a relay claims
/// it, `in_flight` while that relay holds the claim, then `delivered`,
/// `pending` again (a retry is scheduled) or `dead` (given up on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DeliveryState {
    /// Waiting to be claimed, now or at its `next_attempt_at`.
    Pending,
    /// Claimed by a relay under a lease.
    InFlight,
    /// Accepted by the receiver (a 2xx answer).
    Delivered,
    /// Given up on: out of attempts, refused, or asked not to retry.
    Dead,
}

impl DeliveryState {
    /// Every state, in the order a delivery meets them (and `walhook
    /// status` lists them).
    pub const ALL: [DeliveryState; 4] = [
        DeliveryState::Pending,
        DeliveryState::InFlight,
        DeliveryState::Delivered,
        DeliveryState::Dead,
    ];

    /// The state's name as the database stores it.
    pub const fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::InFlight => "in_flight",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }
}

impl fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A state name that is not one of [`DeliveryState::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown delivery state {0:?}; a delivery is pending, in_flight, delivered or dead")]
pub struct UnknownDeliveryState(pub String);

impl FromStr for DeliveryState {
    type Err = UnknownDeliveryState;

    /// Parses a name exactly as the database stores it.
    fn from_str(name: &str) -> Result<DeliveryState, UnknownDeliveryState> {
        DeliveryState::ALL
            .into_iter()
            .find(|state| state.as_str() == name)
            .ok_or_else(|| UnknownDeliveryState(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_reads_back_from_its_name() {
        for state in DeliveryState::ALL {
            assert_eq!(state.as_str().parse::<DeliveryState>(), Ok(state));
            assert_eq!(state.to_string(), state.as_str());
        }
    }

    #[test]
    fn the_names_are_the_ones_the_schema_allows() {
        let schema = include_str!("../../sql/0001_schema.sql");
        let names: Vec<String> = DeliveryState::ALL
            .iter()
            .map(|s| format!("'{s}'"))
            .collect();
        let check = format!("CHECK (state IN ({}))", names.join(", "));
        assert!(schema.contains(&check), "the schema has no {check}");
    }

    #[test]
    fn an_unknown_name_is_refused_with_the_known_ones() {
        let error = "In_Flight".parse::<DeliveryState>().unwrap_err();
        assert_eq!(error, UnknownDeliveryState("In_Flight".into()));
        assert!(error
            .to_string()
            .contains("pending, in_flight, delivered or dead"));
    }
}

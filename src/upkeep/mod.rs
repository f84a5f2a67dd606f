//! Upkeep beside relaying: work a relay does in the background that is
//! neither capture nor delivery. Each task runs until its stop token
//! fires, rides out database outages on its own, and never stops the
//! relay.
//!
//! - [`replays`]: queues large replays chunk by chunk.
//! - [`gauges`]: keeps the queue-depth and slot gauges current.

pub mod gauges;
pub mod replays;
